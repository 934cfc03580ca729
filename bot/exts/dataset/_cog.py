"""`/dataset upload|status|remove|done|approve|request-changes`, and plain image
attachments posted in a ticket's post (with the message-content intent)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.components import kick_relay
from bot.context import acting, lab_config, lab_roles, ticket_here
from bot.embeds import clip
from bot.errors import BotError
from bot.exts.dataset._logic import download, ingest_uploads, report
from db.dataset import add_images, check_allowed, dataset_status, remove_image, ticket_basics
from db.services import NotFound
from db.tickets import Who, act, locate_ticket
from lab.errors import LabError
from lab.lifecycle import Action

if TYPE_CHECKING:
    from bot.app import LabBot

log = logging.getLogger(__name__)


class Dataset(commands.GroupCog, group_name="dataset", group_description="A ticket's images"):
    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    async def upload_files(
        self, who: Who, ticket_id: int, attachments: list[discord.Attachment]
    ) -> str:
        """Check, fetch, ingest and record `attachments`; the per-file report."""
        bot = self.bot
        await bot.db.run(check_allowed, who, ticket_id, Action.EDIT_DATASET, bot.rules)
        if bot.storage is None:
            raise BotError("The lab has no file storage configured; tell a Lab Admin.")
        files, refused = await download(
            attachments, hosts=bot.attachment_hosts, limit=bot.settings.ingest.max_file_bytes
        )
        basics = await bot.db.run(ticket_basics, ticket_id)
        settings = bot.settings.ingest.model_copy(update={"workers": 1})
        outcome = await asyncio.to_thread(ingest_uploads, files, bot.storage, settings, basics)
        outcome.lines[:0] = refused
        await bot.db.run(add_images, who, ticket_id, outcome.images, bot.rules)
        status = await bot.db.run(dataset_status, ticket_id, bot.rules)
        kick_relay(bot)
        return report(outcome, status.count)

    @app_commands.command(name="upload", description="Add images (or a .zip) to the dataset")
    async def upload(
        self,
        interaction: discord.Interaction,
        file: discord.Attachment,
        file2: discord.Attachment | None = None,
        file3: discord.Attachment | None = None,
        ticket: int | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ticket_id = await ticket_here(self.bot, interaction, ticket)
        files = [f for f in (file, file2, file3) if f is not None]
        text = await self.upload_files(who, ticket_id, files)
        await interaction.followup.send(text, ephemeral=True)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Images posted in a ticket's post are ingested too (message-content intent)."""
        if (
            message.author.bot
            or not message.attachments
            or message.guild is None
            or not isinstance(message.channel, discord.Thread)
            or not self.bot.intents.message_content
        ):
            return
        try:
            ticket_id = await self.bot.db.run(
                locate_ticket, message.guild.id, channel_id=message.channel.id
            )
        except NotFound:
            return
        config = await lab_config(self.bot, message.guild.id)
        who = Who(
            message.guild.id,
            message.author.id,
            message.author.display_name,
            lab_roles(message.author, config),
            message.guild.name,
        )
        try:
            text = await self.upload_files(who, ticket_id, list(message.attachments))
        except LabError as error:
            text = error.user_message
        await message.reply(clip(text, 2000), mention_author=False)

    @app_commands.command(name="status", description="Counts, shapes, duplicates, warnings")
    async def status(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await acting(self.bot, interaction)
        ticket_id = await ticket_here(self.bot, interaction, ticket)
        status = await self.bot.db.run(dataset_status, ticket_id, self.bot.rules)
        embed = discord.Embed(title="Dataset", colour=0x5865F2)
        embed.add_field(name="Images", value=f"{status.count} ({status.captioned} captioned)")
        embed.add_field(
            name="Shapes",
            value=", ".join(f"{k} {v}" for k, v in sorted(status.shapes.items())) or "—",
        )
        embed.add_field(
            name="Buckets (training)",
            value=clip(", ".join(f"{k} {v}" for k, v in status.buckets.items()) or "—", 1024),
        )
        embed.add_field(
            name="Sizes",
            value=", ".join(f"{k} {v}" for k, v in sorted(status.resolutions.items())) or "—",
        )
        embed.add_field(
            name="Warnings", value=clip("\n".join(status.warnings) or "none", 1024), inline=False
        )
        listing = "\n".join(f"`{i}` {name} ({w}×{h})" for i, name, w, h in status.images)
        embed.description = clip(listing or "No images yet.", 4000)
        await interaction.followup.send(embed=embed, ephemeral=True)

    @app_commands.command(name="remove", description="Take an image out of the dataset")
    async def remove(
        self, interaction: discord.Interaction, image: int, ticket: int | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ticket_id = await ticket_here(self.bot, interaction, ticket)
        name = await self.bot.db.run(remove_image, who, ticket_id, image, self.bot.rules)
        kick_relay(self.bot)
        await interaction.followup.send(f"Removed image {image} ({name}).", ephemeral=True)

    async def _move(
        self,
        interaction: discord.Interaction,
        ticket: int | None,
        action: Action,
        done: str,
        reason: str | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ticket_id = await ticket_here(self.bot, interaction, ticket)
        await self.bot.db.run(act, who, ticket_id, action, self.bot.rules, reason=reason)
        kick_relay(self.bot)
        await interaction.followup.send(done, ephemeral=True)

    @app_commands.command(name="done", description="The dataset is complete: on to captioning")
    async def done(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await self._move(
            interaction,
            ticket,
            Action.FINISH_DATASET,
            "The dataset is complete; captioning is open.",
        )

    @app_commands.command(name="approve", description="Approve the dataset for training")
    async def approve(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await self._move(
            interaction, ticket, Action.APPROVE, "Approved. The job is on #job-board for Trainers."
        )

    @app_commands.command(name="request-changes", description="Send the dataset back")
    @app_commands.choices(
        phase=[
            app_commands.Choice(name="images", value="dataset"),
            app_commands.Choice(name="captions", value="captions"),
        ]
    )
    async def request_changes(
        self,
        interaction: discord.Interaction,
        reason: str,
        phase: str = "dataset",
        ticket: int | None = None,
    ) -> None:
        action = (
            Action.REQUEST_DATASET_CHANGES if phase == "dataset" else Action.REQUEST_CAPTION_CHANGES
        )
        await self._move(
            interaction, ticket, action, "Changes requested; the post says why.", reason=reason
        )

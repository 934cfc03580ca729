"""`/dataset upload|status|remove|done|approve|request-changes`, and plain image
attachments posted in a ticket's post (with the message-content intent)."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.components import outbox_written
from bot.context import TICKET_HELP, acting, lab_config, lab_roles, ticket_ref
from bot.embeds import clip, dataset_embed, plain
from bot.errors import BotError
from bot.exts.dataset._logic import fetch_refusal, ingest_uploads, report, size_refusal
from bot.pools import Pool
from db.dataset import add_images, dataset_status, remove_image, ticket_basics
from db.refs import TicketKey, TicketRef
from db.tickets import Who, act
from lab.errors import LabError
from lab.lifecycle import Action

if TYPE_CHECKING:
    from bot.app import LabBot

log = logging.getLogger(__name__)


async def download(
    attachments: Sequence[discord.Attachment],
    *,
    hosts: frozenset[str],
    limit: int,
    folder: Path,
    io: Pool,
) -> tuple[list[tuple[str, Path]], list[str]]:
    """Fetch each acceptable attachment into a file under ``folder``: the (name, file) of
    each, and a refusal line for the others. Fetched only from Discord's attachment
    hosts and under `limit` (the rules are `_logic`'s; the Discord I/O is here).

    Each download is written out (in the I/O pool) before the next starts, so at most
    one attachment is in memory however many a member sends.
    """
    files: list[tuple[str, Path]] = []
    refused: list[str] = []
    for index, attachment in enumerate(attachments):
        refusal = fetch_refusal(attachment.filename, attachment.url, attachment.size, hosts, limit)
        if refusal is None:
            data = await attachment.read()
            refusal = size_refusal(attachment.filename, len(data), limit)
            if refusal is None:
                path = folder / f"{index}.upload"
                await io.run(path.write_bytes, data)
                del data
                files.append((attachment.filename, path))
        if refusal is not None:
            refused.append(refusal)
    return files, refused


@app_commands.guild_only()
class Dataset(commands.GroupCog, group_name="dataset", group_description="A ticket's images"):
    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    async def upload_files(
        self, who: Who, ref: TicketKey, attachments: list[discord.Attachment]
    ) -> str:
        """Check, fetch, ingest and record `attachments`; the per-file report. Two
        transactions: the permission check with what ingest needs (before any download),
        then the new rows."""
        bot = self.bot
        if bot.storage is None:
            raise BotError("The lab has no file storage configured; tell a Lab Admin.")
        basics = await bot.db.run(ticket_basics, ref, who, bot.rules)
        # One decode thread per upload: the I/O pool bounds how many run at once, and
        # each holds one image in memory at a time.
        settings = bot.settings.ingest.model_copy(update={"workers": 1})
        with tempfile.TemporaryDirectory(prefix="loralab-upload-") as folder:
            files, refused = await download(
                attachments,
                hosts=bot.attachment_hosts,
                limit=settings.max_file_bytes,
                folder=Path(folder),
                io=bot.io,
            )
            outcome = await bot.io.run(ingest_uploads, files, bot.storage, settings, basics)
        outcome.lines[:0] = refused
        added = await bot.db.run(add_images, who, ref, outcome.images, bot.rules)
        outbox_written(bot)
        return plain(report(outcome, len(basics.known) + len(added)))

    @app_commands.command(name="upload", description="Add images (or a .zip) to the dataset")
    @app_commands.describe(
        file="An image, or a .zip of images (and .txt captions)",
        file2="Another image or .zip",
        file3="Another image or .zip",
        ticket=TICKET_HELP,
    )
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
        ref = ticket_ref(interaction, ticket)
        files = [f for f in (file, file2, file3) if f is not None]
        text = await self.upload_files(who, ref, files)
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
        ref = TicketRef(message.guild.id, thread_id=message.channel.id)
        config = await lab_config(self.bot, message.guild.id)
        who = Who(
            message.guild.id,
            message.author.id,
            message.author.display_name,
            lab_roles(message.author, config),
            message.guild.name,
        )
        try:
            text = await self.upload_files(who, ref, list(message.attachments))
        except LabError as error:
            text = error.user_message
        await message.reply(clip(text, 2000), mention_author=False)

    @app_commands.command(name="status", description="Counts, shapes, duplicates, warnings")
    @app_commands.describe(ticket=TICKET_HELP)
    async def status(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        status = await self.bot.db.run(dataset_status, ref, self.bot.rules)
        embed = dataset_embed(status)
        await interaction.followup.send(embed=embed, ephemeral=True)

    @app_commands.command(name="remove", description="Take an image out of the dataset")
    @app_commands.describe(image="The image id, as /dataset status lists it", ticket=TICKET_HELP)
    async def remove(
        self, interaction: discord.Interaction, image: int, ticket: int | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        name = await self.bot.db.run(remove_image, who, ref, image, self.bot.rules)
        outbox_written(self.bot)
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
        ref = ticket_ref(interaction, ticket)
        await self.bot.db.run(act, who, ref, action, self.bot.rules, reason=reason)
        outbox_written(self.bot)
        await interaction.followup.send(done, ephemeral=True)

    @app_commands.command(name="done", description="The dataset is complete: on to captioning")
    @app_commands.describe(ticket=TICKET_HELP)
    async def done(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await self._move(
            interaction,
            ticket,
            Action.FINISH_DATASET,
            "The dataset is complete; captioning is open.",
        )

    @app_commands.command(name="approve", description="Approve the dataset for training")
    @app_commands.describe(ticket=TICKET_HELP)
    async def approve(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await self._move(
            interaction, ticket, Action.APPROVE, "Approved. The job is on #job-board for Trainers."
        )

    @app_commands.command(name="request-changes", description="Send the dataset back")
    @app_commands.describe(
        reason="What to change; the ticket's post shows it",
        phase="Back to collecting images (default) or to captioning",
        ticket=TICKET_HELP,
    )
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

"""`/caption …`: every change is a caption revision; edits go through a modal."""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.components import guarded, open_modal, outbox_written, submitted
from bot.context import TICKET_HELP, acting, ticket_ref
from bot.embeds import clip
from bot.errors import BotError
from bot.exts.captions._auto import KIND_CHOICES, queue_auto_captions
from bot.exts.captions._logic import caption_texts
from bot.exts.dataset._cog import download
from db.captions import bulk_edit, edit_caption, show_caption, tag_counts, upload_captions
from db.dataset import check_allowed
from db.tickets import act
from lab.lifecycle import Action

if TYPE_CHECKING:
    from bot.app import LabBot

log = logging.getLogger(__name__)
MODAL_READ_BUDGET_S = 1.5


CAPTION_MODAL = re.compile(r"lora:caption:(?P<ticket>\d+):(?P<image>\d+)")


class CaptionModal(discord.ui.Modal, title="Edit caption"):
    """Its custom id carries the ticket and image (``lora:caption:<ticket|0>:<image>``):
    the cog's listener saves a submission, also one opened before a restart."""

    text: discord.ui.TextInput = discord.ui.TextInput(
        label="Caption (trigger word first)",
        custom_id="text",
        style=discord.TextStyle.paragraph,
        max_length=1500,
    )

    def __init__(self, ticket: int | None, image_id: int, current: str) -> None:
        super().__init__(timeout=None, custom_id=f"lora:caption:{ticket or 0}:{image_id}")
        self.text.default = current or None


@app_commands.guild_only()
class Captions(commands.GroupCog, group_name="caption", group_description="Image captions"):
    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    @app_commands.command(name="show", description="An image's caption")
    @app_commands.describe(image="The image id, as /dataset status lists it", ticket=TICKET_HELP)
    async def show(
        self, interaction: discord.Interaction, image: int, ticket: int | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        name, text = await self.bot.db.run(show_caption, ref, image)
        await interaction.followup.send(
            clip(f"`{image}` {name}: `{text or '(no caption)'}`", 2000), ephemeral=True
        )

    @app_commands.command(name="edit", description="Edit an image's caption")
    @app_commands.describe(image="The image id, as /dataset status lists it", ticket=TICKET_HELP)
    async def edit(
        self, interaction: discord.Interaction, image: int, ticket: int | None = None
    ) -> None:
        # The modal must be the first response, within Discord's 3 seconds: the
        # permission and the current text are read with a budget; when the database is
        # slow the modal opens without the current text (saving checks again anyway).
        _, who = await acting(self.bot, interaction)
        current = ""
        try:
            async with asyncio.timeout(MODAL_READ_BUDGET_S):
                _, current = await self.bot.db.run(
                    show_caption, ticket_ref(interaction, ticket), image, who, self.bot.rules
                )
        except TimeoutError:
            log.warning("caption edit: database slow; modal opened without the current text")
        await open_modal(interaction, CaptionModal(ticket, image, current))

    @commands.Cog.listener("on_interaction")
    async def caption_submitted(self, interaction: discord.Interaction) -> None:
        if (got := submitted(interaction, CAPTION_MODAL)) is not None:
            await guarded(interaction, lambda: self._save_caption(interaction, *got))

    async def _save_caption(
        self, interaction: discord.Interaction, match: re.Match[str], values: dict[str, str]
    ) -> None:
        _, who = await acting(self.bot, interaction)
        image_id = int(match["image"])
        ref = ticket_ref(interaction, int(match["ticket"]) or None)
        stored = await self.bot.db.run(
            edit_caption, who, ref, image_id, values.get("text", ""), self.bot.rules
        )
        outbox_written(self.bot)
        await interaction.followup.send(
            clip(f"Caption of image {image_id} saved: `{stored}`", 2000), ephemeral=True
        )

    @app_commands.command(name="bulk", description="Add, remove or replace a tag everywhere")
    @app_commands.describe(
        operation="Add, remove or replace the tag in every caption",
        tag="The tag, e.g. smiling",
        replacement="The new tag (replace only)",
        ticket=TICKET_HELP,
    )
    @app_commands.choices(
        operation=[app_commands.Choice(name=o, value=o) for o in ("add", "remove", "replace")]
    )
    async def bulk(
        self,
        interaction: discord.Interaction,
        operation: str,
        tag: str,
        replacement: str = "",
        ticket: int | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        changed = await self.bot.db.run(
            bulk_edit, who, ref, operation, tag, self.bot.rules, replacement=replacement
        )
        outbox_written(self.bot)
        await interaction.followup.send(
            f"{operation} `{tag}`: {changed} captions changed.", ephemeral=True
        )

    @app_commands.command(name="upload", description="Captions from .txt files or a .zip")
    @app_commands.describe(
        file="A .txt caption per image (same name), or a .zip of them", ticket=TICKET_HELP
    )
    async def upload(
        self,
        interaction: discord.Interaction,
        file: discord.Attachment,
        ticket: int | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        await self.bot.db.run(check_allowed, who, ref, Action.EDIT_CAPTIONS, self.bot.rules)
        settings = self.bot.settings.ingest
        # Unpacked in the I/O pool, never on the loop: a zip of captions takes seconds
        # to inflate, and no interaction anywhere would be acknowledged meanwhile.
        with tempfile.TemporaryDirectory(prefix="loralab-captions-") as folder:
            files, refused = await download(
                [file],
                hosts=self.bot.attachment_hosts,
                limit=settings.caption_upload_max_bytes,
                folder=Path(folder),
                io=self.bot.io,
            )
            texts = await self.bot.io.run(caption_texts, files, settings)
        if not texts and not refused:
            raise BotError("No .txt captions found in that upload.")
        matched, unmatched = await self.bot.db.run(upload_captions, who, ref, texts, self.bot.rules)
        outbox_written(self.bot)
        lines = [f"{len(matched)} captions matched to images by file name.", *refused]
        if unmatched:
            lines.append("No image named like: " + ", ".join(unmatched[:20]))
        await interaction.followup.send(clip("\n".join(lines), 2000), ephemeral=True)

    @app_commands.command(name="auto", description="Queue the auto-tagger for a first draft")
    @app_commands.describe(
        kind="Tags or sentences (default: what suits the base model)",
        model="A model name from the lab's list (default: the lab's choice)",
        overwrite="Also replace captions people wrote",
        ticket=TICKET_HELP,
    )
    @app_commands.choices(kind=KIND_CHOICES)
    async def auto(
        self,
        interaction: discord.Interaction,
        kind: str | None = None,
        model: str | None = None,
        overwrite: bool = False,
        ticket: int | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await queue_auto_captions(self.bot, interaction, kind=kind, model=model,
                                  overwrite=overwrite, ticket=ticket)  # fmt: skip

    @app_commands.command(name="tags", description="How often each tag is used")
    @app_commands.describe(ticket=TICKET_HELP)
    async def tags(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        captioned, counts = await self.bot.db.run(tag_counts, ref)
        lines = [f"`{tag}` {count}/{captioned}" for tag, count in list(counts.items())[:60]]
        await interaction.followup.send(
            clip("\n".join(lines) or "No captions yet.", 2000), ephemeral=True
        )

    @app_commands.command(name="done", description="Captions are complete: on to review")
    @app_commands.describe(ticket=TICKET_HELP)
    async def done(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        await self.bot.db.run(act, who, ref, Action.FINISH_CAPTIONS, self.bot.rules)
        outbox_written(self.bot)
        await interaction.followup.send(
            "Captions are done; the requester reviews the dataset now.", ephemeral=True
        )

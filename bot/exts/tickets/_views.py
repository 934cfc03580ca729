"""The request modal: the free-text parts of a request (kind and base are options)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.components import outbox_written
from bot.context import acting
from bot.errors import handle_error
from db.models import SubjectKind
from db.services import NewTicket
from db.tickets import request_ticket

if TYPE_CHECKING:
    from bot.app import LabBot


class RequestModal(discord.ui.Modal, title="Request a LoRA"):
    name: discord.ui.TextInput = discord.ui.TextInput(label="Name", custom_id="name", max_length=80)
    trigger: discord.ui.TextInput = discord.ui.TextInput(
        label="Trigger word",
        custom_id="trigger",
        max_length=40,
        placeholder="a rare token, e.g. ar1a",
    )
    class_token: discord.ui.TextInput = discord.ui.TextInput(
        label="Class token",
        custom_id="class_token",
        max_length=40,
        placeholder="woman, dog, style, jacket…",
    )
    description: discord.ui.TextInput = discord.ui.TextInput(
        label="Description and references",
        custom_id="description",
        style=discord.TextStyle.paragraph,
        required=False,
        max_length=1500,
    )

    def __init__(self, bot: LabBot, kind: SubjectKind, base: str) -> None:
        super().__init__(timeout=900)
        self.bot = bot
        self.kind = kind
        self.base = base

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        trigger = self.trigger.value.strip()
        if not trigger or " " in trigger or "," in trigger:
            from bot.errors import BotError

            raise BotError("The trigger word must be one word without commas, e.g. `ar1a`.")
        new = NewTicket(
            name=self.name.value.strip(),
            kind=self.kind,
            base_model=self.base,
            trigger_word=trigger,
            class_token=self.class_token.value.strip(),
            description=self.description.value.strip(),
        )
        _, number = await self.bot.db.run(request_ticket, who, new)
        outbox_written(self.bot)
        await interaction.followup.send(
            f"Ticket #{number} opened. Its post appears in the requests forum; "
            "upload images there with /dataset upload.",
            ephemeral=True,
        )

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await handle_error(interaction, error)

"""The request modal: the free-text parts of a request (kind and base are options).

Its custom id carries the kind and base (``lora:request:character:sd15``), and the
Lora cog handles its submission by that id, so a modal opened before a restart is
still accepted after it (`bot.components.open_modal`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord

from bot.components import outbox_written
from bot.context import acting
from bot.errors import BotError
from db.models import SubjectKind
from db.services import NewTicket
from db.tickets import request_ticket
from lab.families import NAMED_BASES

if TYPE_CHECKING:
    from bot.app import LabBot

REQUEST_MODAL = re.compile(r"lora:request:(?P<kind>[a-z_]+):(?P<base>[\w.-]+)")


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

    def __init__(self, kind: SubjectKind, base: str) -> None:
        super().__init__(timeout=None, custom_id=f"lora:request:{kind.value}:{base}")


async def submit_request(
    bot: LabBot, interaction: discord.Interaction, match: re.Match[str], values: dict[str, str]
) -> None:
    """Open the ticket a submitted request modal describes."""
    _, who = await acting(bot, interaction)
    if match["kind"] not in {k.value for k in SubjectKind} or match["base"] not in NAMED_BASES:
        raise BotError("This request form is out of date; run /lora request again.")
    # Trigger word and class token are checked by the service (lab.prompts), for every
    # way a ticket is opened.
    new = NewTicket(
        name=values.get("name", "").strip(),
        kind=SubjectKind(match["kind"]),
        base_model=match["base"],
        trigger_word=values.get("trigger", ""),
        class_token=values.get("class_token", ""),
        description=values.get("description", "").strip(),
    )
    _, number = await bot.db.run(request_ticket, who, new)
    outbox_written(bot)
    await interaction.followup.send(
        f"Ticket #{number} opened. Its post appears in the requests forum; "
        "upload images there with /dataset upload.",
        ephemeral=True,
    )

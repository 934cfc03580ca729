"""`/caption auto`: queue the auto-captioning task for the ticket's images.

The bot only records the request (a task row in the outbox, delivered after commit);
a CPU worker captions the images and leaves a notice row that the relay posts in the
ticket's thread when the drafts are ready. The interaction id is the request id, so a
retried interaction queues nothing twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.components import outbox_written
from bot.context import acting, ticket_ref
from db.autocaption import request_autocaption
from lab.autocaption import CaptionerKind

if TYPE_CHECKING:
    from bot.app import LabBot

KIND_CHOICES = [
    app_commands.Choice(name="tags (WD14 tagger: anime/furry bases)", value="tagger"),
    app_commands.Choice(name="sentences (captioner: SD1.5/SDXL bases)", value="captioner"),
]


async def queue_auto_captions(
    bot: LabBot,
    interaction: discord.Interaction,
    *,
    kind: str | None,
    model: str | None,
    overwrite: bool,
    ticket: int | None,
) -> None:
    """Answer `/caption auto` (the interaction is already deferred, ephemeral)."""
    _, who = await acting(bot, interaction)
    ref = ticket_ref(interaction, ticket)
    request = await bot.db.run(
        request_autocaption,
        who,
        ref,
        bot.rules,
        request_id=interaction.id,
        kind=CaptionerKind(kind) if kind else None,
        model=(model or "").strip() or None,
        overwrite=overwrite,
    )
    outbox_written(bot)
    what = "tags" if request.kind is CaptionerKind.TAGGER else "sentences"
    scope = "every image (new revisions)" if overwrite else "the images without a caption"
    lead = "Already queued" if request.repeated else "Auto-captioning queued"
    await interaction.followup.send(
        f"{lead}: {request.images} images, {scope}, as {what}. The drafts arrive as "
        "captions by **auto**; I'll post in this ticket's thread when they are ready, "
        "then review them with `/caption show`, `/caption tags` and `/caption bulk`.",
        ephemeral=True,
    )

"""What every persistent button and modal shares: acknowledge first, errors to the
one handler, state in the custom id so they work after a restart."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from bot.errors import handle_error


async def guarded(
    interaction: discord.Interaction, work: Callable[[], Awaitable[None]], *, defer: bool = True
) -> None:
    """Defer (ephemeral, within Discord's 3 seconds) and run `work`; any error becomes
    a reply through the central handler, as for slash commands."""
    try:
        if defer and not interaction.response.is_done():
            await interaction.response.defer(ephemeral=True, thinking=True)
        await work()
    except Exception as error:
        await handle_error(interaction, error)


OUTBOX_WRITTEN = "outbox_written"
"""The event a cog dispatches after a transaction wrote outbox rows; the relay listens
(``on_outbox_written``) and delivers them now rather than at its next tick."""


def outbox_written(client: discord.Client) -> None:
    """Tell the relay that the last transaction decided messages or tasks to deliver."""
    client.dispatch(OUTBOX_WRITTEN)


async def open_modal(interaction: discord.Interaction, modal: discord.ui.Modal) -> None:
    """Show `modal` and forget it at once: its custom id carries all its state, and its
    submission is handled by a listener (`submitted`), the same before and after a
    restart. (A modal discord.py keeps in memory is lost with the process, and the
    member who filled it in would see "This interaction failed".)"""
    await interaction.response.send_modal(modal)
    modal.stop()


def submitted(
    interaction: discord.Interaction, custom_id: re.Pattern[str]
) -> tuple[re.Match[str], dict[str, str]] | None:
    """The custom id's match and the text fields' values, if `interaction` submits a
    modal whose custom id matches; else ``None``."""
    if interaction.type is not discord.InteractionType.modal_submit or not interaction.data:
        return None
    match = custom_id.fullmatch(str(interaction.data.get("custom_id", "")))
    if match is None:
        return None
    values: dict[str, str] = {}
    _collect(interaction.data.get("components", []), values)  # type: ignore[arg-type]
    return match, values


def _collect(components: list[dict[str, Any]], values: dict[str, str]) -> None:
    for component in components:
        if component.get("type") == 1:  # an action row
            _collect(component.get("components", []), values)
        elif component.get("type") == 18:  # a label around one input
            _collect([component["component"]], values)
        elif "custom_id" in component and isinstance(component.get("value"), str):
            values[component["custom_id"]] = component["value"]

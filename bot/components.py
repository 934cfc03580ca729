"""What every persistent button shares: acknowledge first, errors to the one handler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

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

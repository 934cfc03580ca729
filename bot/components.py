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


def kick_relay(client: discord.Client) -> None:
    """Ask the outbox relay to deliver what the last transaction decided, now."""
    kick = getattr(client, "kick_relay", None)
    if kick is not None:
        kick()

"""The bot's errors and the one place that turns any error into a reply.

A `LabError` (from the policy, the database services or the bot) carries a message
written for the member: it is shown as is, ephemerally. Anything else is a bug: it
is logged with an incident id, and the member sees that id to quote to an admin.
"""

from __future__ import annotations

import logging
import uuid

import discord
from discord import app_commands

from lab.errors import LabError

log = logging.getLogger(__name__)


class BotError(LabError):
    """Base error of the bot package: its message is shown to the member."""

    code = "bot_error"


class NotSetUp(BotError):
    code = "not_set_up"

    def __init__(self) -> None:
        super().__init__("This server has no lab yet. A server admin runs /lab setup first.")


class NotAllowed(BotError):
    code = "not_allowed"


def incident_id() -> str:
    return uuid.uuid4().hex[:8]


def describe(error: BaseException) -> tuple[str, bool]:
    """(message for the member, was it expected?) for any error a handler raised."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, LabError):
        return error.user_message, True
    if isinstance(error, discord.RateLimited):  # longer than the bot waits (30 s default)
        return (
            f"Discord is rate limiting the lab for {error.retry_after:.0f} s; try again then.",
            True,
        )
    if isinstance(error, app_commands.CheckFailure):
        return str(error) or "You can't use this command here.", True
    if isinstance(error, app_commands.AppCommandError):  # a bad option value, and the like
        return str(error) or "That command could not be run with those options.", True
    return "", False


async def reply(interaction: discord.Interaction, text: str) -> None:
    """Send `text` ephemerally, as the response or a follow-up, whichever is still open."""
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def handle_error(interaction: discord.Interaction, error: BaseException) -> None:
    """The central error handler of app commands and components."""
    message, expected = describe(error)
    if not expected:
        incident = incident_id()
        log.error(
            "incident %s in %s by user %s",
            incident,
            interaction.command.qualified_name if interaction.command else interaction.data,
            interaction.user.id,
            exc_info=error,
        )
        message = (
            f"Something went wrong on our side (incident `{incident}`). Check /lora status "
            "before trying again, and quote the incident to a Lab Admin if it repeats."
        )
    try:
        await reply(interaction, message)
    except discord.HTTPException:
        log.warning("could not tell user %s about an error", interaction.user.id)


class LabTree(app_commands.CommandTree["discord.Client"]):
    """The bot's command tree (installed with ``tree_cls``): every app-command error
    goes to `handle_error`."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await handle_error(interaction, error)

"""Every `loralab` error as one line and an exit code; ``loralab -v`` keeps the traceback.

The errors are recognised by their class name and module, so that the CLI does not
import discord, aiohttp or SQLAlchemy to describe them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Exit codes: 1 a refused input (config, dataset), 3 Discord refused the bot, 4 a
# service could not be reached (network, Discord's gateway), 5 the database.
EXIT_INPUT = 1
EXIT_DISCORD_AUTH = 3
EXIT_UNREACHABLE = 4
EXIT_DATABASE = 5


@dataclass(frozen=True)
class Described:
    message: str
    exit_code: int


def _names(error: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(error).__mro__}


def describe_error(error: BaseException) -> Described | None:
    """A one-line message and exit code for an error we know; None for a bug."""
    names = _names(error)
    if "lab.errors.LabError" in names:
        return Described(str(error), EXIT_INPUT)
    if "discord.errors.LoginFailure" in names:
        return Described(
            "Discord refused the bot token: check DISCORD_TOKEN (Developer Portal → Bot → "
            "Reset Token)",
            EXIT_DISCORD_AUTH,
        )
    if "discord.errors.PrivilegedIntentsRequired" in names:
        return Described(
            "Discord refused the bot's intents: turn on Server Members and Message Content "
            "under Developer Portal → Bot → Privileged Gateway Intents",
            EXIT_DISCORD_AUTH,
        )
    if "sqlalchemy.exc.OperationalError" in names or "sqlalchemy.exc.InterfaceError" in names:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        return Described(f"cannot use the database (DATABASE_URL): {reason}", EXIT_DATABASE)
    if "aiohttp.client_exceptions.ClientConnectionError" in names or isinstance(
        error, ConnectionError | TimeoutError
    ):
        return Described(
            f"cannot reach a service ({type(error).__name__}: {error}); check the network "
            "connection and any proxy settings",
            EXIT_UNREACHABLE,
        )
    return None

"""`loralab invite-url`: the OAuth2 link that adds the bot to a server with the
permissions it needs and the ``bot applications.commands`` scopes.

The application id comes from ``--application-id``, else ``DISCORD_APPLICATION_ID``
(or ``LORALAB_DISCORD_APPLICATION_ID``), else from the bot token: its first part is
the bot user's id in base64, and a bot user's id is its application's id.
"""

from __future__ import annotations

import base64
import binascii
import os
from urllib.parse import urlencode

import click

AUTHORIZE = "https://discord.com/oauth2/authorize"
SCOPES = ("bot", "applications.commands")

# What the bot does with each permission (checked against bot/exts when it changes).
PERMISSIONS: dict[str, str] = {
    "view_channel": "see the lab's channels",
    "manage_roles": "/lab setup creates the lab roles; /role join gives them",
    "manage_channels": "/lab setup creates #lab-requests (a forum, with status tags) and the rest",
    "manage_threads": "ticket posts' forum tags follow the ticket status",
    "create_public_threads": "one forum post per ticket",
    "send_messages": "ticket cards, #job-board, #testing, #releases, guides",
    "send_messages_in_threads": "progress, samples and notices in ticket posts",
    "embed_links": "ticket cards and sample grids are embeds",
    "attach_files": "sample grids, loss curves and released LoRA files",
    "read_message_history": "find and edit its own messages after a restart",
    "pin_messages": "pin the role guides in #lab-guide",
    "manage_messages": "pin messages where the newer pin permission is unknown",
}


def permissions_value() -> int:
    """The permission bits of `PERMISSIONS`."""
    import discord

    return discord.Permissions(**dict.fromkeys(PERMISSIONS, True)).value


def application_id_from_token(token: str) -> int | None:
    """The bot's id encoded in the first part of its token (``None`` if it is not one)."""
    first = token.split(".", 1)[0]
    try:
        text = base64.b64decode(first + "=" * (-len(first) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return int(text) if text.isdigit() and 15 <= len(text) <= 21 else None


def invite_link(application_id: int) -> str:
    """The URL that adds application `application_id` to a server."""
    query = {
        "client_id": str(application_id),
        "permissions": str(permissions_value()),
        "integration_type": "0",
        "scope": " ".join(SCOPES),
    }
    return f"{AUTHORIZE}?{urlencode(query)}"


def _configured_application_id() -> int | None:
    for name in ("LORALAB_DISCORD_APPLICATION_ID", "DISCORD_APPLICATION_ID"):
        value = os.environ.get(name, "").strip()
        if value:
            if not value.isdigit():
                raise click.UsageError(f"{name} must be the application's numeric id.")
            return int(value)
    from lab.settings import BotSettings

    token = BotSettings().discord_token
    if token is None:
        return None
    found = application_id_from_token(token.get_secret_value())
    if found is None:
        raise click.UsageError(
            "DISCORD_TOKEN is set but is not a bot token (its first part should be the "
            "application id in base64): copy it again from Developer Portal → Bot, or pass "
            "--application-id."
        )
    return found


@click.command(name="invite-url")
@click.option(
    "--application-id",
    type=int,
    default=None,
    help="The application id (Developer Portal → General Information).",
)
@click.option("--explain", is_flag=True, help="Also list each permission and why it is needed.")
def invite_url(application_id: int | None, explain: bool) -> None:
    """Print the link that adds the bot to a Discord server."""
    if application_id is None:
        application_id = _configured_application_id()
    if application_id is None:
        raise click.UsageError(
            "No application id: pass --application-id, set DISCORD_APPLICATION_ID, or set "
            "DISCORD_TOKEN (the id is read from the token). See docs/quickstart.md."
        )
    click.echo(invite_link(application_id))
    if explain:
        for name, why in PERMISSIONS.items():
            click.echo(f"  {name:<26} {why}")

"""`loralab bot`: the Discord bot process (needs DISCORD_TOKEN)."""

from __future__ import annotations

import asyncio
import logging

import click

log = logging.getLogger(__name__)


async def _run(settings: object) -> None:
    """Own every lifetime here: the database engine and the bot itself (discord.py
    owns its HTTP session; uploads are fetched through it)."""

    from bot.app import create_bot
    from db.session import make_engine, make_session_factory
    from lab.settings import BotSettings, WorkerSettings
    from lab.storage import storage_from_settings
    from worker.client import CelerySender, client_app

    assert isinstance(settings, BotSettings)
    assert settings.discord_token is not None
    client_settings = WorkerSettings(
        home=settings.home, database_url=settings.database_url, broker_url=settings.broker_url
    )
    celery = client_app(client_settings, "loralab-bot")
    engine = make_engine(settings.resolved_database_url)
    try:
        bot = create_bot(
            settings,
            session_factory=make_session_factory(engine),
            task_sender=CelerySender(celery),
            storage=storage_from_settings(settings),
        )
        async with bot:
            await bot.start(settings.discord_token.get_secret_value())
    finally:
        engine.dispose()


@click.command()
def bot() -> None:
    """Run the Discord bot (DISCORD_TOKEN; DATABASE_URL, BROKER_URL as for the worker)."""
    from lab.settings import BotSettings

    settings = BotSettings()
    if settings.discord_token is None:
        raise click.UsageError("Set DISCORD_TOKEN to the bot's token (Discord developer portal).")
    settings.home.mkdir(parents=True, exist_ok=True)
    log.info("starting the bot on %s", settings)
    try:
        asyncio.run(_run(settings))
    except KeyboardInterrupt:
        log.info("bot stopped")

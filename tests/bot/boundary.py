"""The lab's bot with discord.py's real HTTP client, against `FakeDiscord` on 127.0.0.1.

No gateway: the bot logs in over REST (`bot.login`, which runs `setup_hook`), its
caches stay empty, so the relay fetches every channel as it would after a restart.
Tests drive the relay by calling `Relay.deliver()` and move the lab's clock with
`advance()`, so a row postponed by backoff becomes due without waiting.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import discord
import pytest
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from bot.app import LabBot, create_bot
from bot.exts.lab._logic import REQUESTS_FORUM, STATUS_TAGS, TEXT_CHANNELS
from db.models import SubjectKind
from db.outbox import RelayPolicy
from db.services import NewTicket
from db.session import make_engine, make_session_factory
from db.tickets import Who, request_ticket, save_guild_config
from lab.settings import BotSettings
from lab.storage import LocalStorage
from tests.bot.conftest import RecordingTaskSender
from tests.bot.discord_server import BOT_ID, GUILD_ID, FakeDiscord


@dataclass
class Boundary:
    discord: FakeDiscord
    bot: LabBot
    factory: sessionmaker[Session]
    forum_id: int
    channels: dict[str, int]
    offset: list[float] = field(default_factory=lambda: [0.0])

    def advance(self, seconds: float) -> None:
        """Move the lab's clock (rows waiting for backoff become due)."""
        self.offset[0] += seconds

    async def deliver(self, passes: int = 1, step: float = 400.0) -> int:
        """`passes` relay passes, `step` seconds of lab time apart; rows delivered."""
        relay = self.bot.get_cog("Relay")
        assert relay is not None
        sent = 0
        for _ in range(passes):
            sent += await relay.deliver()  # type: ignore[attr-defined]
            self.advance(step)
        return sent

    def open_ticket(self, name: str = "Aria") -> int:
        who = Who(GUILD_ID, 42, "rita", guild_name="Boundary Lab")
        new = NewTicket(
            name=name,
            kind=SubjectKind.CHARACTER,
            base_model="sd15",
            trigger_word="ar1a",
            class_token="woman",
        )
        ticket_id, _ = request_ticket(self.factory, who, new)
        return ticket_id


@asynccontextmanager
async def boundary_lab(
    tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch, **options: Any
) -> AsyncIterator[Boundary]:
    fake = FakeDiscord()
    forum_id, tag_ids = fake.add_forum(REQUESTS_FORUM, list(STATUS_TAGS.values()))
    channels = {key: fake.add_channel(name) for key, (name, _) in TEXT_CHANNELS.items()}
    runner = web.AppRunner(fake.app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")

    db_path = tmp_path / "lab.db"
    shutil.copy(template_db, db_path)
    engine = make_engine(f"sqlite:///{db_path}")
    factory = make_session_factory(engine)
    save_guild_config(
        factory,
        GUILD_ID,
        "Boundary Lab",
        {
            "channels": {"requests": forum_id, **channels},
            "tags": {state: tag_ids[name] for state, name in STATUS_TAGS.items()},
            "roles": {},
        },
    )
    offset = [0.0]

    def clock() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=offset[0])

    options.setdefault("relay_policy", RelayPolicy(max_attempts=5, base_delay=1.0))
    bot = create_bot(
        BotSettings(home=tmp_path, database_url=f"sqlite:///{db_path}"),
        session_factory=factory,
        task_sender=RecordingTaskSender(),
        storage=LocalStorage(tmp_path / "storage"),
        clock=clock,
        sync_commands=False,
        relay_interval=3600.0,
        **options,
    )
    try:
        await bot.login("boundary-token")
        assert bot.user is not None and bot.user.id == BOT_ID
        yield Boundary(fake, bot, factory, forum_id, channels, offset)
    finally:
        await bot.close()
        await runner.cleanup()
        engine.dispose()

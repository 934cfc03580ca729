"""A real bot against simcord's simulated Discord, on a real (SQLite) lab database.

`running_lab()` builds the bot with `create_bot` exactly as `loralab bot` does, but
with an in-test task sender (records what would go to Celery), local file storage and
a clock that follows simcord's virtual time, then creates a guild with members.
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
import simcord
from sqlalchemy.orm import Session, sessionmaker

from bot.app import LabBot, create_bot
from bot.errors import describe
from db import migrate
from db.dataset import NewImage, add_images
from db.outbox import RelayPolicy
from db.session import make_engine, make_session_factory
from db.tickets import Who, act, locate_ticket
from lab.lifecycle import Action, LabRole
from lab.settings import BotSettings
from lab.storage import LocalStorage
from tests.db.conftest import factory  # noqa: F401  (the rolled-back database fixture)

SIMCORD_HOSTS = frozenset({"cdn.simcord.invalid"})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database migrated to head; each test copies the file (fast, isolated)."""
    path = tmp_path_factory.mktemp("template") / "lab.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@dataclass
class RecordingTaskSender:
    """The `TaskSender` the bot gets in tests: remembers every Celery send."""

    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, name: str, payload: dict[str, Any], *, task_id: str, queue: str) -> None:
        self.sent.append({"name": name, "payload": payload, "task_id": task_id, "queue": queue})


@dataclass
class Lab:
    env: simcord.Env
    bot: LabBot
    guild: Any
    factory: sessionmaker[Session]
    tasks: RecordingTaskSender
    storage: LocalStorage
    admin: Any
    general: Any
    make_bot: Any = None

    async def restart(self) -> None:
        """Restart with a brand-new bot process (same database, same Discord)."""
        self.bot = self.make_bot()
        await self.env.restart_bot(self.bot)

    def member(self, name: str, *roles: str) -> Any:
        """A new member holding the named lab roles (Discord roles made by /lab setup)."""
        handles = [self.guild.roles[r] for r in roles]
        return self.guild.add_member(self.env.create_user(name), roles=handles)

    def member_without_lab(self, name: str) -> Any:
        return self.guild.add_member(self.env.create_user(name))

    def channel(self, name: str) -> Any:
        return self.guild.channels[name]

    async def relay(self) -> None:
        """Let the relay's timer run once (virtual time): it delivers what is due."""
        await self.env.advance_time(self.bot.relay_interval)

    async def setup(self) -> None:
        result = await self.admin.slash(self.general, "lab setup")
        assert "Lab setup done" in followup_text(result)


def virtual_clock(env_box: list[simcord.Env]) -> Any:
    """Real now plus simcord's virtual elapsed time: rows written by the services (real
    time) are due at once, and `advance_time` moves the lab's clock forward."""

    def now() -> datetime:
        elapsed = env_box[0].backend.clock.elapsed if env_box else 0.0
        return datetime.now(UTC) + timedelta(seconds=elapsed)

    return now


@asynccontextmanager
async def running_lab(
    tmp_path: Path,
    template_db: Path,
    *,
    wrap_factory: Any = None,
    check_errors: bool = True,
    settings: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[Lab]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    db_path = tmp_path / "lab.db"
    if not db_path.exists():
        shutil.copy(template_db, db_path)
    engine = make_engine(f"sqlite:///{db_path}")
    session_factory = make_session_factory(engine)
    tasks = RecordingTaskSender()
    storage = LocalStorage(tmp_path / "storage")
    env_box: list[simcord.Env] = []
    options.setdefault("relay_policy", RelayPolicy(base_delay=0.0))
    bot_settings = BotSettings(
        home=tmp_path,
        database_url=f"sqlite:///{db_path}",
        **{"attachment_hosts": SIMCORD_HOSTS, **(settings or {})},
    )

    def make_bot() -> LabBot:
        bot = create_bot(
            bot_settings,
            session_factory=session_factory,
            task_sender=tasks,
            storage=storage,
            clock=virtual_clock(env_box),
            **options,
        )
        if wrap_factory is not None:
            bot.db = wrap_factory(bot.db)
        return bot

    bot = make_bot()
    try:
        # simcord sees every error that reaches the tree's on_error, the refusals a
        # member is meant to read included; only the unexpected ones fail the test.
        async with simcord.run(bot, check_errors=False) as env:
            env_box.append(env)
            owner = env.create_user("owner")
            guild = env.create_guild("LoRA Lab", owner=owner)
            general = guild.create_text_channel("general")
            admin = guild.add_member(owner)
            yield Lab(env, bot, guild, session_factory, tasks, storage, admin, general, make_bot)
            if check_errors and (unexpected := unexpected_errors(env)):
                raise ExceptionGroup("the bot raised unexpected errors", unexpected)
    finally:
        engine.dispose()


def unexpected_errors(env: simcord.Env) -> list[BaseException]:
    """The errors simcord saw that the bot's handler treats as bugs (an incident id),
    leaving out the refusals and mistakes a member is meant to read."""
    return [error for error in env.errors if not describe(error)[1]]


def followup_text(result: Any) -> str:
    """What the member read in reply (the ephemeral follow-up, or the response)."""
    if result.followups:
        return result.followups[-1].content
    return result.response.content if result.response else ""


def thread_messages(thread: Any) -> list[discord.Message]:
    return thread.history()


async def open_request(lab: Lab, requester: Any, name: str = "Aria", trigger: str = "ar1a") -> Any:
    """`/lora request` through its modal; returns the ticket's forum thread."""
    shown = await requester.slash(lab.general, "lora request", kind="character", base="sd15")
    assert shown.modal is not None
    submitted = await requester.submit_modal(
        shown,
        {
            "name": name,
            "trigger": trigger,
            "class_token": "woman",
            "description": "A red-haired adventurer.",
        },
    )
    assert "opened" in followup_text(submitted)
    return lab.channel("lab-requests").threads[-1]


def who_of(lab: Lab, member: Any, *roles: LabRole) -> Who:
    return Who(lab.guild.id, member.id, member.name, frozenset(roles), "LoRA Lab")


def seed_images(lab: Lab, member: Any, ticket_id: int, count: int = 16) -> None:
    """`count` captioned images recorded directly (uploads have their own tests)."""
    images = [
        NewImage(
            source=f"img{i}.png",
            sha256=f"{i:064x}",
            phash=f"{i * 7919:016x}",
            width=512,
            height=640,
            size_bytes=1000,
            storage_key=f"images/{i}.png",
            caption=f"ar1a, woman, pose {i}",
        )
        for i in range(count)
    ]
    add_images(lab.factory, who_of(lab, member, LabRole.CURATOR), ticket_id, images, lab.bot.rules)


async def ready_ticket(lab: Lab, requester: Any) -> tuple[Any, int]:
    """A ticket brought to READY (its job on #job-board); returns (thread, ticket id)."""
    thread = await open_request(lab, requester)
    ticket_id = locate_ticket(lab.factory, lab.guild.id, channel_id=thread.id)
    seed_images(lab, requester, ticket_id)
    who = who_of(lab, requester)
    for action in (Action.FINISH_DATASET, Action.FINISH_CAPTIONS, Action.APPROVE):
        act(lab.factory, who, ticket_id, action, lab.bot.rules)
    await lab.relay()
    return thread, ticket_id

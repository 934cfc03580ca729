"""The bot: a `commands.Bot` subclass that receives everything it uses.

`create_bot(settings, session_factory=…, task_sender=…)` builds it; nothing is read
from the environment or built at import time. `setup_hook` loads one extension per
feature, registers the persistent buttons (their state lives in their custom ids, so
they work after a restart) and syncs commands. The command tree is `LabTree`, whose
`on_error` is the central error handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import discord
from discord.ext import commands
from sqlalchemy.orm import Session, sessionmaker

from bot.context import LabConfig
from bot.database import Database
from bot.errors import LabTree
from bot.pools import Pool
from db.outbox import RelayPolicy
from lab.settings import BotSettings
from lab.storage import Storage
from lab.tasks import TaskSender

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.exts.lab",
    "bot.exts.roles",
    "bot.exts.tickets",
    "bot.exts.dataset",
    "bot.exts.captions",
    "bot.exts.jobs",
    "bot.exts.testing",
    "bot.exts.relay",
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LabBot(commands.Bot):
    """LoRA Lab's Discord bot. Its dependencies come in through `__init__`."""

    def __init__(
        self,
        settings: BotSettings,
        *,
        db: Database,
        task_sender: TaskSender,
        storage: Storage | None = None,
        clock: Callable[[], datetime] = _utcnow,
        relay_interval: float = 2.0,
        progress_interval: float = 10.0,
        unclaim_interval: float = 600.0,
        relay_policy: RelayPolicy | None = None,
        download_link: Callable[[str], str | None] | None = None,
        sync_commands: bool = True,
        intents: discord.Intents | None = None,
    ) -> None:
        if intents is None:
            intents = discord.Intents.default()
            intents.message_content = settings.message_content_intent
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            tree_cls=LabTree,
            max_ratelimit_timeout=settings.rate_limit_max_wait_seconds,
            # Nothing the bot posts pings anyone unless a message says whom (by id):
            # member text reaches public posts, and must not notify @everyone or a role.
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.settings = settings
        self.rules = settings.rules
        self.db = db
        self.task_sender = task_sender
        self.storage = storage
        self.attachment_hosts = settings.attachment_hosts
        self.clock = clock
        self.relay_interval = relay_interval
        self.progress_interval = progress_interval
        self.unclaim_interval = unclaim_interval
        self.relay_policy = relay_policy or RelayPolicy()
        self._download_link = download_link
        self.sync_commands = sync_commands
        self.lab_configs: dict[int, LabConfig] = {}
        # File work (unpacking uploads, storage reads, broker sends) has its own small
        # pool: it is memory-heavy, and must never hold the database's threads.
        self.io = Pool("lab-io", settings.io_threads)

    async def setup_hook(self) -> None:
        for name in EXTENSIONS:
            await self.load_extension(name)
        if self.sync_commands:
            await self.tree.sync()
        log.info("LoRA Lab bot ready to connect: %d extensions", len(EXTENSIONS))

    def download_link(self, key: str) -> str | None:
        """A link to a stored file too big to attach (``None`` when none can be made)."""
        return self._download_link(key) if self._download_link else None

    async def close(self) -> None:
        await super().close()
        self.io.close()
        self.db.close()

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("unhandled error in %s", event_method)


def create_bot(
    settings: BotSettings,
    *,
    session_factory: sessionmaker[Session],
    task_sender: TaskSender,
    storage: Storage | None = None,
    **options: Any,
) -> LabBot:
    """Build the bot around its dependencies (`options` go to `LabBot`)."""
    return LabBot(
        settings,
        db=Database(session_factory),
        task_sender=task_sender,
        storage=storage,
        **options,
    )

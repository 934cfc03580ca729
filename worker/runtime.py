"""The worker process's settings and its per-process resources (engine, session factory,
storage). This module owns both: everything else in `worker/` asks `settings()` and
`runtime()` here. Resources are built lazily in the process that uses them: a forked
pool child never inherits a parent's connections."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_session_factory
from lab.settings import WorkerSettings
from lab.storage import Storage, storage_from_settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Runtime:
    settings: WorkerSettings
    engine: Engine
    factory: sessionmaker[Session]
    storage: Storage
    name: str


_settings: WorkerSettings | None = None
_runtime: Runtime | None = None
_pid: int | None = None


def settings() -> WorkerSettings:
    """This process's settings: those given to `use_settings`, else read from the
    environment once (`celery -A worker.app` starts without an entry point of ours)."""
    global _settings
    if _settings is None:
        _settings = WorkerSettings()
    return _settings


def use_settings(new: WorkerSettings) -> None:
    """Make `new` this process's settings (entry points and tests); the runtime built
    from older settings, if any, is dropped."""
    global _settings, _runtime
    _settings, _runtime = new, None


def worker_name(settings: WorkerSettings) -> str:
    return settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"


def build_runtime(settings: WorkerSettings) -> Runtime:
    engine = make_engine(settings.resolved_database_url)
    return Runtime(
        settings=settings,
        engine=engine,
        factory=make_session_factory(engine),
        storage=storage_from_settings(settings),
        name=worker_name(settings),
    )


def runtime() -> Runtime:
    """This process's runtime (rebuilt after a fork)."""
    global _runtime, _pid
    if _runtime is None or _pid != os.getpid():
        _runtime, _pid = build_runtime(settings()), os.getpid()
    return _runtime


def retry_db(
    action: Callable[[], T], *, what: str, attempts: int = 8, first_delay: float = 0.5
) -> T:
    """Run `action`, retrying while the database is unreachable (a restart, a network
    blip), with exponential backoff; the last failure is raised."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (OperationalError, DBAPIError) as exc:
            if attempt == attempts or not _is_connection_error(exc):
                raise
            log.warning(
                "%s: database unavailable (%s); retry %d in %.1fs",
                what,
                type(exc.orig).__name__,
                attempt,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 10)
    raise AssertionError("unreachable")


def _is_connection_error(exc: DBAPIError) -> bool:
    if exc.connection_invalidated or isinstance(exc, OperationalError):
        return True
    text = str(exc.orig).lower()
    return any(word in text for word in ("connection", "server closed", "terminating"))

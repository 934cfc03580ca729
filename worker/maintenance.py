"""Housekeeping in the worker's main process: the reaper, the task relay and the
registry heartbeat, on a timer thread (nothing here imports torch)."""

from __future__ import annotations

import logging
import threading

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from db import jobs
from db.outbox import deliver_pending
from lab.tasks import OutboxKind
from worker.client import CelerySender
from worker.registry import heartbeat
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def reap_and_dispatch(rt: Runtime, app: Celery) -> jobs.ReapResult:
    """Re-queue expired jobs, then send every pending task row (ours and the bot's)
    through `app`."""
    result = jobs.reap_expired(rt.factory, rt.settings.rules, max_attempts=rt.settings.max_attempts)
    deliver_pending(rt.factory, OutboxKind.TASK.value, CelerySender(app).deliver)
    return result


class Maintenance:
    def __init__(self, rt: Runtime, app: Celery) -> None:
        self.rt = rt
        self.app = app
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        interval = min(self.rt.settings.reaper_interval_seconds, self.rt.settings.lease_seconds / 2)
        while not self._stop.wait(interval):
            try:
                heartbeat(self.rt)
                reap_and_dispatch(self.rt, self.app)
            except SQLAlchemyError as exc:  # the database is away: try again next tick
                log.warning("maintenance skipped: %s", exc)

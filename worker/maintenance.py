"""Housekeeping in the worker's main process: the reaper, the reconciliation of queued
jobs with the broker, the task relay and the registry heartbeat, on a timer thread
(nothing here imports torch)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import redis
from celery import Celery
from kombu.exceptions import KombuError
from sqlalchemy.exc import SQLAlchemyError

from db import reaper, reconcile
from db.outbox import deliver_pending
from lab.tasks import OutboxKind
from worker.client import CelerySender
from worker.registry import heartbeat, register
from worker.runtime import Runtime

log = logging.getLogger(__name__)
# What a broker that is away raises here (the maintenance loop tries again next tick).
BROKER_ERRORS = (OSError, KombuError, redis.RedisError)
# A worker silent for this many leases is gone: its jobs were re-queued long ago.
GONE_AFTER_LEASES = 3


def reap_and_dispatch(rt: Runtime, app: Celery) -> reaper.ReapResult:
    """Re-queue expired jobs, forget dead workers, re-send queued jobs whose message
    the broker lost, then send every pending task row (ours and the bot's) through
    `app`."""
    result = reaper.reap_expired(
        rt.factory, rt.settings.rules, max_attempts=rt.settings.max_attempts
    )
    resend_lost(rt, app)
    deliver_pending(rt.factory, OutboxKind.TASK.value, CelerySender(app).deliver)
    return result


def resend_lost(rt: Runtime, app: Celery) -> list[int]:
    """Jobs queued longer than `resend_queued_after_seconds` whose task is neither
    waiting in the broker nor reserved by a worker get their task sent again."""
    stale = reconcile.stale_queued(rt.factory, rt.settings.resend_queued_after_seconds)
    if not stale:
        return []
    try:
        held = broker_task_ids(app, {task.queue for task in stale})
    except BROKER_ERRORS as exc:  # the broker is away: the relay will wait for it too
        log.warning("reconciliation skipped, broker unavailable: %s", exc)
        return []
    sent = [t.job_id for t in stale if t.task_id not in held and reconcile.resend(rt.factory, t)]
    if sent:
        log.warning("broker lost the task of queued jobs %s: sent again", sent)
    return sent


def broker_task_ids(app: Celery, queues: set[str]) -> set[str]:
    """Ids of the tasks the broker holds for `queues`: waiting, or reserved by a worker
    and not yet acknowledged (late acks keep a running task's message there)."""
    url = app.conf.broker_url or ""
    if url.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            raws = [raw for q in sorted(queues) for raw in client.lrange(q, 0, -1)]
            # kombu's Redis transport keeps reserved messages as [message, exchange, key]
            reserved = [json.loads(raw)[0] for raw in client.hvals("unacked")]
        finally:
            client.close()
        return {m["headers"]["id"] for m in [*map(json.loads, raws), *reserved]}
    if url.startswith("filesystem://"):
        folder = Path(app.conf.broker_transport_options["data_folder_in"])
        held: set[str] = set()
        for path in folder.glob("*.msg"):
            try:
                held.add(json.loads(path.read_bytes())["headers"]["id"])
            except (OSError, ValueError, KeyError):  # taken (or being written) meanwhile
                continue
        return held
    return set()  # a broker we cannot look into: re-send after the bound (claims dedupe)


class Maintenance:
    """The housekeeping thread. It starts whether or not the database answers: a worker
    started during an outage registers itself as soon as the database is back."""

    def __init__(self, rt: Runtime, app: Celery, queues: list[str]) -> None:
        self.rt = rt
        self.app = app
        self.queues = queues
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        interval = min(self.rt.settings.reaper_interval_seconds, self.rt.settings.lease_seconds / 2)
        registered = False
        while True:
            try:
                if not registered:
                    register(self.rt, self.queues)
                    registered = True
                    log.info("worker %s registered on queues %s", self.rt.name, self.queues)
                elif not heartbeat(self.rt):  # our row was removed (marked gone): again
                    register(self.rt, self.queues)
                reap_and_dispatch(self.rt, self.app)
            except SQLAlchemyError as exc:  # the database is away: try again next tick
                log.warning("maintenance skipped, database unavailable: %s", exc)
            if self._stop.wait(interval):
                return

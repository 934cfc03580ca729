"""Worker process lifetime: register in the registry and start the housekeeping
thread when the worker is ready; leave the registry when it shuts down; a GPU
worker's pool child preloads the trainer stack (`worker.preload`).

Loaded by the Celery app's `include` when a worker starts (never by a client).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import (
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from sqlalchemy.exc import SQLAlchemyError

from lab.tasks import Queue
from worker import preload, shutdown
from worker.maintenance import Maintenance
from worker.registry import unregister
from worker.runtime import runtime, settings

log = logging.getLogger(__name__)
_maintenance: Maintenance | None = None


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    global _maintenance
    rt = runtime()
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    # Registering is the maintenance thread's first step, retried each tick: a worker
    # started while the database is down still gets its reaper, relay and heartbeat.
    _maintenance = Maintenance(rt, sender.app, queues)
    _maintenance.start()
    log.info("worker %s ready on queues %s", rt.name, queues)


@worker_shutting_down.connect
def _on_shutting_down(**_: Any) -> None:
    # The warm shutdown has begun (SIGTERM): a training job saves and goes back to
    # the queue now rather than at its end or after its lease.
    shutdown.forward_to_children()


@worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    if _maintenance is not None:
        _maintenance.stop()
    try:
        unregister(runtime())
    except SQLAlchemyError as exc:  # the row goes stale and is marked gone by others
        log.warning("could not leave the worker registry: %s", exc)


@worker_process_init.connect
def _on_child_start(**_: Any) -> None:
    # A GPU worker's pool child exists to train: import the trainer while it is idle.
    if Queue.GPU.value in settings().queues:
        preload.start()

"""Worker process lifetime: register in the registry and start the housekeeping
thread when the worker is ready; leave the registry when it shuts down; a GPU
worker's pool child preloads the trainer stack (`worker.preload`).

Loaded by the Celery app's `include` when a worker starts (never by a client).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from lab.tasks import Queue
from worker import preload
from worker.maintenance import Maintenance
from worker.registry import register, unregister
from worker.runtime import runtime, settings

log = logging.getLogger(__name__)
_maintenance: Maintenance | None = None


@worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    global _maintenance
    rt = runtime()
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    register(rt, queues)
    _maintenance = Maintenance(rt, sender.app)
    _maintenance.start()
    log.info("worker %s ready on queues %s", rt.name, queues)


@worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    if _maintenance is not None:
        _maintenance.stop()
    unregister(runtime())


@worker_process_init.connect
def _on_child_start(**_: Any) -> None:
    # A GPU worker's pool child exists to train: import the trainer while it is idle.
    if Queue.GPU.value in settings().queues:
        preload.start()

"""The Celery app (`celery -A worker.app …`). Settings are read when Celery first
needs its configuration (the `on_configure` signal), never at import.

The task modules and the worker's lifecycle hooks come in through `include`: Celery
imports them when a worker starts, so nothing here imports them back. A process that
only sends tasks uses `worker.client` and never loads this module.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from lab.settings import WorkerSettings
from worker.client import celery_config
from worker.runtime import settings, use_settings

# worker.process connects the worker_ready / worker_shutdown signals (registry,
# reaper, relay); worker.tasks registers the tasks.
app = Celery("loralab", include=["worker.tasks", "worker.process"])


@app.on_configure.connect
def _configure_from_settings(sender: Celery, **_: Any) -> None:
    sender.conf.update(celery_config(settings()))


def configure(new: WorkerSettings) -> Celery:
    """Configure `app` from explicit settings (entry points and tests)."""
    use_settings(new)
    app.conf.update(celery_config(new))
    return app

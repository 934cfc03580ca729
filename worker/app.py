"""The Celery app (`celery -A worker.app …`). Settings are read when Celery first
needs its configuration (the `on_configure` signal), never at import.

Every reliability setting says why it is there.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from lab.settings import WorkerSettings
from lab.tasks import QUEUE_OF, Queue

log = logging.getLogger(__name__)

app = Celery("loralab", include=["worker.tasks"])


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """The Celery configuration for a worker (or a client) with `settings`."""
    broker = settings.resolved_broker_url
    hard_limit = settings.max_job_hours * 3600
    config: dict[str, Any] = {
        "broker_url": broker,
        # Results live in the database (job rows, artifacts), not in Celery.
        "task_ignore_result": True,
        "result_backend": None,
        # Ack only after the task ran: a worker that dies mid-task leaves the message
        # to be delivered again (the job's lease makes the repeat harmless).
        "task_acks_late": True,
        # ...and when the child process itself is killed (OOM, SIGKILL), re-queue it
        # instead of acking it as failed.
        "task_reject_on_worker_lost": True,
        # One message at a time per process: a long GPU job must not sit on a second
        # job's message that another idle worker could run now.
        "worker_prefetch_multiplier": 1,
        # Payloads are ids; JSON only, never pickle.
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": Queue.CPU.value,
        "task_routes": {name.value: {"queue": queue.value} for name, queue in QUEUE_OF.items()},
        # A job running longer than this is stuck: kill it (the lease then expires and
        # the reaper re-queues it from its last saved state). The soft limit first
        # lets the trainer save its state.
        "task_time_limit": hard_limit,
        "task_soft_time_limit": hard_limit * 0.95,
        # Keep retrying the broker forever while it restarts; jobs keep running.
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_hijack_root_logger": False,
        # Celery's own pool keeps the main process torch-free; tasks import the
        # trainer inside their body.
        "worker_pool": "prefork",
    }
    if broker.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("in", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "in"),
            "data_folder_out": str(folder / "in"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    elif broker.startswith(("redis://", "rediss://")):
        # Redis re-delivers an unacked message after the visibility timeout: it must be
        # longer than the longest job, or a running job would be handed to a second
        # worker (the lease would refuse it, but it would waste a GPU slot).
        config["broker_transport_options"] = {"visibility_timeout": hard_limit + 3600}
    return config


_settings: WorkerSettings | None = None


def settings() -> WorkerSettings:
    """This process's settings: those given to `configure`, else read from the
    environment once (`celery -A worker.app` starts without an entry point of ours)."""
    global _settings
    if _settings is None:
        _settings = WorkerSettings()
    return _settings


@app.on_configure.connect
def _configure_from_settings(sender: Celery, **_: Any) -> None:
    sender.conf.update(celery_config(settings()))


def configure(new: WorkerSettings) -> Celery:
    """Configure `app` from explicit settings (entry points and tests)."""
    global _settings
    _settings = new
    app.conf.update(celery_config(new))
    return app


import worker.process  # noqa: E402,F401  (connects the worker lifetime signals)

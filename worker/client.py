"""What a process that only *sends* tasks needs (the bot, the demo, the worker's own
relay): the Celery configuration and the outbox sender.

Side-effect free: importing this connects no signal, reads no settings and loads none
of the worker's lifecycle (`worker.process`, `worker.maintenance`), so the bot can use
it without becoming half a worker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerUnavailable

from db.outbox import PendingRow, RetryableDeliveryError
from lab.settings import WorkerSettings
from lab.tasks import QUEUE_OF, Queue


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


def client_app(settings: WorkerSettings, name: str = "loralab-client") -> Celery:
    """A Celery app that only sends (no tasks registered, no worker signals)."""
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


class CelerySender:
    """Sends outbox `task` rows to Celery (the TaskSender of lab.tasks)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, name: str, payload: dict[str, Any], *, task_id: str, queue: str) -> None:
        try:
            self.app.send_task(name, kwargs=payload, task_id=task_id, queue=queue)
        except (OSError, BrokerUnavailable) as exc:
            # The broker is down or restarting (Celery wraps a refused connection in
            # kombu's OperationalError): an outage, retried until it is back, never
            # a dead letter.
            raise RetryableDeliveryError(f"broker unavailable: {exc}", outage=True) from exc

    def deliver(self, row: PendingRow) -> None:
        """`db.outbox.deliver_pending` callback for ``task`` rows."""
        body = row.payload
        self.send(body["name"], body["payload"], task_id=body["task_id"], queue=body["queue"])

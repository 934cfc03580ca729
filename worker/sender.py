"""Sends outbox `task` rows to Celery (the TaskSender of lab.tasks)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from db.outbox import PendingRow, RetryableDeliveryError


class CelerySender:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def send(self, name: str, payload: dict[str, Any], *, task_id: str, queue: str) -> None:
        try:
            self.app.send_task(name, kwargs=payload, task_id=task_id, queue=queue)
        except OSError as exc:  # the broker is restarting: the relay retries later
            raise RetryableDeliveryError(f"broker unavailable: {exc}") from exc

    def deliver(self, row: PendingRow) -> None:
        """`db.outbox.deliver_pending` callback for ``task`` rows."""
        body = row.payload
        self.send(body["name"], body["payload"], task_id=body["task_id"], queue=body["queue"])

"""Outbox delivery core: rows written in a transaction are delivered after commit,
at least once, with their idempotency key, retried with backoff, dead-lettered after
`max_attempts`. The bot's Discord relay and the task relays both run on it.

A relay calls `deliver_pending(factory, prefix, deliver)`; `deliver(row)` performs the
side effect (send a message, send a Celery task) using ``row.idempotency_key`` so a
repeat after a crash is harmless, and raises `RetryableDeliveryError` (5xx, 429,
connection lost) or any other exception (a permanent failure) to say it did not.
An asyncio relay (the bot's) uses the same steps (`due_rows`, `mark_sent`,
`mark_failed`) with its side effects on the event loop between them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.models import OutboxMessage
from db.repositories import OutboxItem, add_outbox
from lab.errors import LabError
from lab.tasks import QUEUE_OF, OutboxKind, TaskName, task_id

log = logging.getLogger(__name__)


class RetryableDeliveryError(LabError):
    """The receiver was unavailable (5xx, 429, connection lost): try again later."""

    code = "delivery_retry"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, attempts: int, retry_after: float | None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return max(backoff, retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class RelayReport:
    sent: int = 0
    retried: int = 0
    dead: int = 0


def enqueue_task(
    session: Session, name: TaskName, payload: dict[str, object], *ids: int
) -> OutboxMessage:
    """Record a Celery task to send once the caller's transaction commits."""
    tid = task_id(name, *ids)
    return add_outbox(
        session,
        OutboxItem(
            kind=OutboxKind.TASK.value,
            payload={
                "name": name.value,
                "payload": payload,
                "task_id": tid,
                "queue": QUEUE_OF[name].value,
            },
            idempotency_key=tid,
        ),
    )


def deliver_pending(
    factory: sessionmaker[Session],
    kind_prefix: str,
    deliver: Callable[[PendingRow], None],
    *,
    policy: RelayPolicy | None = None,
    limit: int = 50,
) -> RelayReport:
    """Deliver due rows of kinds starting with `kind_prefix`, oldest first.

    Each row is marked in its own short transaction after its side effect, so a crash
    mid-batch re-delivers at most the row in flight (hence the idempotency keys).
    """
    policy = policy or RelayPolicy()
    sent = retried = dead = 0
    for row in due_rows(factory, kind_prefix, policy, limit=limit):
        try:
            deliver(row)
        except RetryableDeliveryError as exc:
            attempts = row.attempts + 1
            wait = policy.delay(attempts, exc.retry_after)
            mark_failed(factory, row.id, attempts=attempts, error=str(exc), wait=wait)
            if attempts >= policy.max_attempts:
                dead += 1
                log.error("outbox %s dead-lettered after %d attempts: %s", row.id, attempts, exc)
            else:
                retried += 1
                log.warning("outbox %s retry %d in %.1fs: %s", row.id, attempts, wait, exc)
        except Exception as exc:  # a permanent failure: keep the row, stop retrying it
            mark_failed(factory, row.id, attempts=policy.max_attempts, error=repr(exc), wait=0)
            dead += 1
            log.exception("outbox %s failed permanently", row.id)
        else:
            mark_sent(factory, row.id)
            sent += 1
    return RelayReport(sent, retried, dead)


@dataclass(frozen=True, slots=True)
class PendingRow:
    id: int
    kind: str
    payload: dict[str, Any]
    idempotency_key: str
    attempts: int


def due_rows(
    factory: sessionmaker[Session],
    kind_prefix: str,
    policy: RelayPolicy,
    *,
    now: datetime | None = None,
    limit: int = 50,
) -> list[PendingRow]:
    """Undelivered rows of kinds starting with `kind_prefix` due at `now`, oldest first."""
    with factory() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.sent_at.is_(None),
                OutboxMessage.kind.startswith(kind_prefix),
                OutboxMessage.available_at <= (now or utcnow()),
                OutboxMessage.attempts < policy.max_attempts,
            )
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        return [
            PendingRow(r.id, r.kind, dict(r.payload), r.idempotency_key, r.attempts) for r in rows
        ]


def mark_sent(factory: sessionmaker[Session], row_id: int) -> None:
    with factory.begin() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id)
            .values(sent_at=utcnow(), attempts=OutboxMessage.attempts + 1)
        )


def mark_failed(
    factory: sessionmaker[Session],
    row_id: int,
    *,
    attempts: int,
    error: str,
    wait: float,
    now: datetime | None = None,
) -> None:
    """Count a failed attempt; the row is due again after `wait` seconds (a row at
    `policy.max_attempts` is a dead letter)."""
    with factory.begin() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id)
            .values(
                attempts=attempts,
                last_error=error[:2000],
                available_at=(now or utcnow()) + timedelta(seconds=wait),
            )
        )


def pending_count(factory: sessionmaker[Session], kind_prefix: str = "") -> int:
    """Rows not yet delivered (dead letters included), for tests and /lab workers."""
    with factory() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None), OutboxMessage.kind.startswith(kind_prefix))
            )
            or 0
        )

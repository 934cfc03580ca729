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

from sqlalchemy import func, or_, select, true, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from db.base import utcnow
from db.models import OutboxMessage, Ticket, TrainingJob
from db.repositories import OutboxItem, add_outbox
from lab.errors import LabError
from lab.tasks import QUEUE_OF, OutboxKind, TaskName, family_queue, task_id

log = logging.getLogger(__name__)


class RetryableDeliveryError(LabError):
    """The receiver was unavailable (5xx, 429, connection lost): try again later.

    ``outage=True`` says the receiver itself is down (the broker restarting), not that
    it refused this row: such a row is retried at the longest backoff for as long as
    the outage lasts and never becomes a dead letter.
    """

    code = "delivery_retry"

    def __init__(
        self, message: str, *, retry_after: float | None = None, outage: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.outage = outage


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, attempts: int, retry_after: float | None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return max(backoff, retry_after or 0.0)

    def attempts_after(self, attempts: int, *, outage: bool) -> int:
        """A row's attempt count after one more failure; an outage of the receiver
        stops one short of a dead letter (so the row keeps being retried)."""
        if outage:
            return min(attempts + 1, self.max_attempts - 1)
        return attempts + 1


@dataclass(frozen=True, slots=True)
class RelayReport:
    sent: int = 0
    retried: int = 0
    dead: int = 0


def enqueue_task(
    session: Session,
    name: TaskName,
    payload: dict[str, object],
    *ids: int,
    resend: int | None = None,
) -> OutboxMessage:
    """Record a Celery task to send once the caller's transaction commits; `resend`
    numbers a re-send of the same task (same task id, its own outbox row)."""
    tid = task_id(name, *ids)
    queue = QUEUE_OF[name].value
    if name is TaskName.TRAIN:  # routed to the workers that have the job's base model
        queue = train_queue_of(session, int(str(payload["job_id"])))
    return add_outbox(
        session,
        OutboxItem(
            kind=OutboxKind.TASK.value,
            payload={
                "name": name.value,
                "payload": payload,
                "task_id": tid,
                "queue": queue,
            },
            idempotency_key=tid if resend is None else f"{tid}:resend-{resend}",
        ),
    )


def train_queue_of(session: Session, job_id: int) -> str:
    """The queue a training job's task goes to: its base family's (`family_queue`)."""
    family = session.scalar(
        select(Ticket.base_family)
        .join(TrainingJob, TrainingJob.ticket_id == Ticket.id)
        .where(TrainingJob.id == job_id)
    )
    return family_queue(family.value) if family is not None else QUEUE_OF[TaskName.TRAIN].value


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
    held: set[int] = set()  # tickets whose earlier row was postponed in this pass
    for row in due_rows(factory, kind_prefix, policy, limit=limit):
        if row.ticket_id in held:
            continue
        try:
            deliver(row)
        except RetryableDeliveryError as exc:
            attempts = policy.attempts_after(row.attempts, outage=exc.outage)
            wait = policy.delay(attempts, exc.retry_after)
            gone = attempts >= policy.max_attempts
            mark_failed(factory, row.id, attempts=attempts, error=str(exc), wait=wait, dead=gone)
            if gone:
                dead += 1
                log.error("outbox %s dead-lettered after %d attempts: %s", row.id, attempts, exc)
            else:
                retried += 1
                if row.ticket_id is not None:
                    held.add(row.ticket_id)
                log.warning("outbox %s retry %d in %.1fs: %s", row.id, attempts, wait, exc)
            if exc.outage:  # the receiver is down: the other rows would only wait on it too
                break
        except Exception as exc:  # a permanent failure: keep the row, stop retrying it
            mark_failed(
                factory, row.id, attempts=policy.max_attempts, error=repr(exc), wait=0, dead=True
            )
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
    ticket_id: int | None = None
    created_at: datetime | None = None


def due_rows(
    factory: sessionmaker[Session],
    kind_prefix: str,
    policy: RelayPolicy,
    *,
    now: datetime | None = None,
    limit: int = 50,
) -> list[PendingRow]:
    """Undelivered rows of kinds starting with `kind_prefix` due at `now`, oldest first.

    A row waits while an earlier live row of the same ticket (and prefix) is not due:
    a card edit, notice or grid postponed by a 429 is not passed by the ones written
    after it. Rows of other tickets are not held up. Dead letters hold nothing up.
    """
    now = now or utcnow()
    live = (
        OutboxMessage.sent_at.is_(None),
        OutboxMessage.dead_at.is_(None),
        OutboxMessage.attempts < policy.max_attempts,
    )
    earlier = aliased(OutboxMessage)
    waiting_before = (
        select(earlier.id)
        .where(
            earlier.ticket_id == OutboxMessage.ticket_id,
            earlier.id < OutboxMessage.id,
            earlier.sent_at.is_(None),
            earlier.dead_at.is_(None),
            earlier.attempts < policy.max_attempts,
            earlier.kind.startswith(kind_prefix),
            earlier.available_at > now,
        )
        .exists()
    )
    with factory() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(
                *live,
                OutboxMessage.kind.startswith(kind_prefix),
                OutboxMessage.available_at <= now,
                or_(OutboxMessage.ticket_id.is_(None), ~waiting_before),
            )
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        return [
            PendingRow(
                r.id,
                r.kind,
                dict(r.payload),
                r.idempotency_key,
                r.attempts,
                r.ticket_id,
                r.created_at,
            )
            for r in rows
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
    dead: bool = False,
) -> None:
    """Count a failed attempt; the row is due again after `wait` seconds. A dead row
    (`dead`, or `attempts` at the policy's maximum) is kept with `error` as its reason
    until an operator re-drives it."""
    now = now or utcnow()
    with factory.begin() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row_id)
            .values(
                attempts=attempts,
                last_error=error[:2000],
                available_at=now + timedelta(seconds=wait),
                dead_at=now if dead else None,
            )
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    kind: str
    ticket_id: int | None
    attempts: int
    reason: str
    dead_at: datetime | None
    created_at: datetime


def _dead(policy: RelayPolicy) -> Any:
    return OutboxMessage.sent_at.is_(None) & (
        OutboxMessage.dead_at.is_not(None) | (OutboxMessage.attempts >= policy.max_attempts)
    )


def _of_guild(guild_id: int | None) -> Any:
    """All rows, or (a lab admin's view) only those of the guild's tickets."""
    if guild_id is None:
        return true()
    return OutboxMessage.ticket_id.in_(select(Ticket.id).where(Ticket.guild_id == guild_id))


def dead_letters(
    factory: sessionmaker[Session],
    policy: RelayPolicy | None = None,
    *,
    limit: int = 100,
    guild_id: int | None = None,
) -> list[DeadLetter]:
    """Rows given up on, newest first, each with the reason it was given up (only the
    guild's tickets' rows with `guild_id`)."""
    policy = policy or RelayPolicy()
    with factory() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(_dead(policy), _of_guild(guild_id))
            .order_by(OutboxMessage.id.desc())
            .limit(limit)
        )
        return [
            DeadLetter(
                r.id, r.kind, r.ticket_id, r.attempts, r.last_error or "", r.dead_at, r.created_at
            )
            for r in rows
        ]


def redrive(
    factory: sessionmaker[Session],
    row_ids: list[int],
    policy: RelayPolicy | None = None,
    *,
    guild_id: int | None = None,
) -> list[int]:
    """Give dead rows a fresh set of attempts, due now; returns the ids re-driven.
    Ids that are not dead letters (delivered, still pending, unknown, or with
    `guild_id` another guild's) are left alone."""
    policy = policy or RelayPolicy()
    with factory.begin() as session:
        ids = list(
            session.scalars(
                select(OutboxMessage.id).where(
                    OutboxMessage.id.in_(row_ids), _dead(policy), _of_guild(guild_id)
                )
            )
        )
        if ids:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids))
                .values(attempts=0, dead_at=None, available_at=utcnow())
            )
        return ids


def pending_count(factory: sessionmaker[Session], kind_prefix: str = "") -> int:
    """Rows not yet delivered (dead letters included), for tests and /train workers."""
    with factory() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None), OutboxMessage.kind.startswith(kind_prefix))
            )
            or 0
        )

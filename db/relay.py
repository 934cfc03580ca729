"""The async relays' view of the outbox: the same rows, policy and bookkeeping as
`db.outbox.deliver_pending`, split into steps so an asyncio relay (the bot's) can do
its side effects on the event loop between them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.models import OutboxMessage
from db.outbox import RelayPolicy


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
        return len(
            session.scalars(
                select(OutboxMessage.id).where(
                    OutboxMessage.sent_at.is_(None), OutboxMessage.kind.startswith(kind_prefix)
                )
            ).all()
        )

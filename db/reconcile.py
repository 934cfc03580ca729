"""Reconciliation of queued jobs with the broker: the database says a job is QUEUED,
but its Celery message may be gone (Redis restarted without persistence, the last
second of its AOF lost). Such a job's task is sent again; the lease's claim makes a
second copy of the message harmless (it finds nothing to claim)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from db.base import utcnow
from db.models import JobStatus, OutboxMessage, TrainingJob
from db.outbox import enqueue_task, train_queue_of
from lab.tasks import OutboxKind, TaskName, task_id


@dataclass(frozen=True, slots=True)
class QueuedTask:
    job_id: int
    attempt: int
    task_id: str
    queue: str
    sends: int
    """Outbox rows already written for this attempt (the first send and re-sends)."""


def _rows_of(job_id: int, attempt: int) -> object:
    key = task_id(TaskName.TRAIN, job_id, attempt)
    return (OutboxMessage.kind == OutboxKind.TASK.value) & or_(
        OutboxMessage.idempotency_key == key,
        OutboxMessage.idempotency_key.startswith(f"{key}:resend-"),
    )


def stale_queued(
    factory: sessionmaker[Session], older_than: float, *, now: datetime | None = None
) -> list[QueuedTask]:
    """QUEUED jobs whose newest task was sent more than `older_than` seconds ago (or that
    have none, queued that long): the broker should have delivered them by now unless
    every worker is busy, which the caller asks the broker about."""
    cutoff = (now or utcnow()) - timedelta(seconds=older_than)
    stale: list[QueuedTask] = []
    with factory() as session:
        queued = session.execute(
            select(TrainingJob.id, TrainingJob.attempt, TrainingJob.created_at).where(
                TrainingJob.status == JobStatus.QUEUED, TrainingJob.attempt >= 1
            )
        ).all()
        for job_id, attempt, created_at in queued:
            sends, unsent, last_sent = session.execute(
                select(
                    func.count(),
                    # pending rows: the relay will send them (a dead letter will not)
                    func.count().filter(
                        OutboxMessage.sent_at.is_(None), OutboxMessage.dead_at.is_(None)
                    ),
                    func.max(OutboxMessage.sent_at),
                ).where(_rows_of(job_id, attempt))
            ).one()
            if unsent:  # the relay has not sent it yet: nothing to reconcile
                continue
            if (last_sent or created_at) > cutoff:
                continue
            tid = task_id(TaskName.TRAIN, job_id, attempt)
            queue = train_queue_of(session, job_id)
            stale.append(QueuedTask(job_id, attempt, tid, queue, sends))
    return stale


def resend(factory: sessionmaker[Session], task: QueuedTask) -> bool:
    """Write a re-send of `task` to the outbox if its job is still QUEUED for that
    attempt; False when a worker claimed it (or it moved on) meanwhile."""
    with factory.begin() as session:
        still = session.scalar(
            select(TrainingJob.id)
            .where(
                TrainingJob.id == task.job_id,
                TrainingJob.attempt == task.attempt,
                TrainingJob.status == JobStatus.QUEUED,
            )
            .with_for_update()
        )
        if still is None:
            return False
        enqueue_task(
            session,
            TaskName.TRAIN,
            {"job_id": task.job_id, "attempt": task.attempt},
            task.job_id,
            task.attempt,
            resend=task.sends,
        )
    return True

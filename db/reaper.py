"""Handing a running job back to the queue: the reaper (its worker died, the lease
expired) and a worker that gives a job back itself (a retryable failure, a shutdown).
Either way the job is QUEUED as its next attempt and resumes from its newest state on
whichever worker claims it, or, after `max_attempts`, FAILED with the reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.base import utcnow
from db.jobs import Lease, fenced, finish
from db.models import JobStatus, OutboxMessage, TrainingJob
from db.outbox import enqueue_task
from lab.settings import LabRules
from lab.tasks import OutboxKind, TaskName, task_id

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReapResult:
    requeued: list[int]
    failed: list[int]


def requeue(
    factory: sessionmaker[Session],
    lease: Lease,
    rules: LabRules,
    *,
    max_attempts: int,
    why: str,
    give_up: str,
    expired_before: datetime | None = None,
) -> JobStatus | None:
    """Queue the job's next attempt, telling the thread `why`; after `max_attempts` fail
    it with `give_up` instead. ``None`` when the lease is not ours any more (or, with
    `expired_before`, its worker renewed it after all: it is alive)."""
    if lease.attempt >= max_attempts:
        failed = finish(
            factory,
            lease,
            rules,
            status=JobStatus.FAILED,
            error=give_up,
            expired_before=expired_before,
        )
        return JobStatus.FAILED if failed else None
    attempt = lease.attempt + 1
    with factory.begin() as session:
        moved = session.execute(
            update(TrainingJob)
            .where(fenced(lease, expired_before))
            .values(
                status=JobStatus.QUEUED,
                attempt=attempt,
                lease_owner=None,
                lease_expires_at=None,
                error=why,
            )
            .returning(TrainingJob.ticket_id)
        ).scalar_one_or_none()
        if moved is None:
            return None
        job_id = lease.job_id
        enqueue_task(
            session, TaskName.TRAIN, {"job_id": job_id, "attempt": attempt}, job_id, attempt
        )
        text = (
            f"{why} Job {job_id} was re-queued (attempt {attempt} of {max_attempts}) "
            "and will resume from its last saved state."
        )
        repo.add_outbox(
            session,
            repo.OutboxItem(
                OutboxKind.NOTICE.value,
                {"ticket_id": moved, "text": text},
                f"requeue:{job_id}:{attempt}",
            ),
        )
    return JobStatus.QUEUED


def release(factory: sessionmaker[Session], lease: Lease, why: str) -> bool:
    """Give the job back to the queue as the *same* attempt (a shutdown is not the
    job's failure and costs it no attempt): QUEUED at once, its task sent again (a
    numbered re-send of the same task id), the thread told `why`."""
    with factory.begin() as session:
        moved = session.execute(
            update(TrainingJob)
            .where(fenced(lease))
            .values(status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None)
            .returning(TrainingJob.ticket_id)
        ).scalar_one_or_none()
        if moved is None:
            return False
        job_id, attempt = lease.job_id, lease.attempt
        sends = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                OutboxMessage.idempotency_key.startswith(
                    f"{task_id(TaskName.TRAIN, job_id, attempt)}:"
                )
            )
        )
        enqueue_task(
            session,
            TaskName.TRAIN,
            {"job_id": job_id, "attempt": attempt},
            job_id,
            attempt,
            resend=(sends or 0) + 1,
        )
        repo.add_outbox(
            session,
            repo.OutboxItem(
                OutboxKind.NOTICE.value,
                {
                    "ticket_id": moved,
                    "text": f"{why} Job {job_id} is queued again and resumes from the "
                    "state it saved just now.",
                },
                f"release:{job_id}:{lease.token}",
            ),
        )
    return True


def reap_expired(
    factory: sessionmaker[Session],
    rules: LabRules,
    *,
    max_attempts: int,
    now: datetime | None = None,
) -> ReapResult:
    """Re-queue running jobs whose lease expired (their worker died), or fail them after
    `max_attempts`. Safe to run from many workers at once: each job moves by a
    conditional UPDATE that re-checks the lease is still expired, so only one reaper
    acts on it, and never on a job whose worker renewed in between."""
    now = now or utcnow()
    requeued: list[int] = []
    failed: list[int] = []
    with factory() as session:
        expired = session.execute(
            select(
                TrainingJob.id,
                TrainingJob.fencing_token,
                TrainingJob.attempt,
                TrainingJob.stop_requested,
            ).where(TrainingJob.status == JobStatus.RUNNING, TrainingJob.lease_expires_at < now)
        ).all()
    for job_id, token, attempt, stop_requested in expired:
        if stop_requested:  # asked to stop, then its worker died: it ends, never re-runs
            lease = Lease(job_id, attempt, token, owner="reaper")
            reason = "Stopped on request; its worker stopped answering while it saved."
            finish(
                factory,
                lease,
                rules,
                status=JobStatus.CANCELLED,
                error=reason,
                expired_before=now,
            )
            continue
        outcome = requeue(
            factory,
            Lease(job_id, attempt, token, owner="reaper"),
            rules,
            max_attempts=max_attempts,
            why="The worker training this job stopped answering.",
            give_up=f"The worker running this job stopped answering {attempt} times; "
            "the job was given up. Check /train workers, then /train retry.",
            expired_before=now,
        )
        if outcome is JobStatus.QUEUED:
            requeued.append(job_id)
        elif outcome is JobStatus.FAILED:
            failed.append(job_id)
    if requeued or failed:
        log.warning("reaper: re-queued %s, failed %s", requeued, failed)
    return ReapResult(requeued, failed)

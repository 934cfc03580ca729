"""Training-job leases: exactly one worker owns a running job.

A worker *claims* the job row for one attempt (a conditional UPDATE that bumps the
fencing token), *renews* the lease while it runs, and writes results only while its
token is still the job's token. A duplicate or late delivery finds nothing to claim.
The *reaper* re-queues jobs whose lease expired (a worker died), up to a maximum
number of attempts, then fails them with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.base import utcnow
from db.models import (
    Artifact,
    ArtifactKind,
    DatasetImage,
    ImageStatus,
    JobStatus,
    SampleSet,
    Ticket,
    TrainingJob,
)
from db.outbox import enqueue_task
from db.services import TransitionRefused, apply_transition
from lab.lifecycle import Action, Actor, TicketState
from lab.settings import LabRules
from lab.storage import StoredObject
from lab.tasks import OutboxKind, TaskName

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker holds the job now (our lease expired and it was re-queued)."""


@dataclass(frozen=True, slots=True)
class Lease:
    job_id: int
    attempt: int
    token: int
    owner: str


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    stop_requested: bool


def _fenced(lease: Lease) -> Any:
    return (
        (TrainingJob.id == lease.job_id)
        & (TrainingJob.fencing_token == lease.token)
        & (TrainingJob.status == JobStatus.RUNNING)
    )


def claim(
    factory: sessionmaker[Session], job_id: int, attempt: int, owner: str, lease_seconds: float
) -> Lease | None:
    """Take the job for `attempt`; ``None`` when it is not queued for that attempt
    (a duplicate delivery, a late one after a re-queue, or a cancelled job)."""
    now = utcnow()
    with factory.begin() as session:
        token = session.execute(
            update(TrainingJob)
            .where(
                TrainingJob.id == job_id,
                TrainingJob.attempt == attempt,
                TrainingJob.status == JobStatus.QUEUED,
            )
            .values(
                status=JobStatus.RUNNING,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                heartbeat_at=now,
                fencing_token=TrainingJob.fencing_token + 1,
                started_at=now,
                error=None,
            )
            .returning(TrainingJob.fencing_token)
        ).scalar_one_or_none()
    if token is None:
        log.info(
            "job %s attempt %s: nothing to claim (duplicate or late delivery)", job_id, attempt
        )
        return None
    return Lease(job_id, attempt, token, owner)


def renew(
    factory: sessionmaker[Session],
    lease: Lease,
    lease_seconds: float,
    *,
    progress: dict[str, Any] | None = None,
    progress_seq: int | None = None,
) -> LeaseStatus:
    """Extend the lease (and record progress); raises `LeaseLost` if it is gone."""
    now = utcnow()
    values: dict[str, Any] = {
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "heartbeat_at": now,
    }
    if progress is not None:
        values["progress"] = progress
    with factory.begin() as session:
        stop = session.execute(
            update(TrainingJob)
            .where(_fenced(lease))
            .values(**values)
            .returning(TrainingJob.stop_requested)
        ).scalar_one_or_none()
        if stop is None:
            raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer ours")
        if progress is not None and progress_seq is not None:
            ticket_id = session.scalar(
                select(TrainingJob.ticket_id).where(TrainingJob.id == lease.job_id)
            )
            repo.add_outbox(
                session,
                repo.OutboxItem(
                    OutboxKind.JOB_PROGRESS.value,
                    {"job_id": lease.job_id, "ticket_id": ticket_id},
                    f"progress:{lease.job_id}:{lease.token}:{progress_seq}",
                ),
            )
    return LeaseStatus(stop_requested=bool(stop))


def record_artifact(
    factory: sessionmaker[Session],
    lease: Lease,
    kind: ArtifactKind,
    stored: StoredObject,
    *,
    epoch: int | None,
) -> int:
    """Record (or replace, on a resumed attempt) the job's artifact of `kind` for `epoch`."""
    with factory.begin() as session:
        _check(session, lease)
        row = session.scalar(
            select(Artifact).where(
                Artifact.job_id == lease.job_id, Artifact.kind == kind, Artifact.epoch == epoch
            )
        )
        if row is None:
            row = Artifact(job_id=lease.job_id, kind=kind, epoch=epoch)
            session.add(row)
        row.storage_key, row.sha256, row.size_bytes = stored.key, stored.sha256, stored.size
        if kind is ArtifactKind.STATE:
            session.execute(
                update(TrainingJob)
                .where(TrainingJob.id == lease.job_id)
                .values(state_key=stored.key, state_epoch=epoch)
            )
        session.flush()
        return row.id


def _check(session: Session, lease: Lease) -> None:
    held = session.scalar(select(TrainingJob.id).where(_fenced(lease)).with_for_update())
    if held is None:
        raise LeaseLost(f"job {lease.job_id}: lease {lease.token} is no longer ours")


def _ticket_event(session: Session, lease: Lease, kind: OutboxKind) -> None:
    repo.add_outbox(
        session,
        repo.OutboxItem(kind.value, {"job_id": lease.job_id}, f"{kind.value}:{lease.job_id}"),
    )


def finish(
    factory: sessionmaker[Session],
    lease: Lease,
    rules: LabRules,
    *,
    status: JobStatus,
    error: str | None = None,
) -> bool:
    """End the job (SUCCEEDED, FAILED or CANCELLED) and move its ticket along; False
    when the lease was lost meanwhile (someone else owns the outcome)."""
    with factory.begin() as session:
        done = session.execute(
            update(TrainingJob)
            .where(_fenced(lease))
            .values(status=status, error=error, finished_at=utcnow(), lease_expires_at=None)
            .returning(TrainingJob.ticket_id)
        ).scalar_one_or_none()
        if done is None:
            return False
        action = {
            JobStatus.SUCCEEDED: Action.TRAINING_SUCCEEDED,
            JobStatus.FAILED: Action.TRAINING_FAILED,
        }.get(status)
        ticket_status = session.scalar(select(Ticket.status).where(Ticket.id == done))
        if action is not None and ticket_status is TicketState.TRAINING:
            try:
                with session.begin_nested():
                    apply_transition(session, done, action, Actor.system(), rules, reason=error)
            except TransitionRefused as refused:  # e.g. cancelled meanwhile: job row still ends
                log.warning("job %s ended but ticket %s stays: %s", lease.job_id, done, refused)
        kind = {
            JobStatus.SUCCEEDED: OutboxKind.JOB_FINISHED,
            JobStatus.FAILED: OutboxKind.JOB_FAILED,
        }.get(status)
        if kind is not None:
            _ticket_event(session, lease, kind)
    return True


@dataclass(frozen=True, slots=True)
class ReapResult:
    requeued: list[int]
    failed: list[int]


def reap_expired(
    factory: sessionmaker[Session],
    rules: LabRules,
    *,
    max_attempts: int,
    now: datetime | None = None,
) -> ReapResult:
    """Re-queue running jobs whose lease expired (their worker died), or fail them after
    `max_attempts`. Safe to run from many workers at once: each job moves by a
    conditional UPDATE, so only one reaper acts on it."""
    now = now or utcnow()
    requeued: list[int] = []
    failed: list[int] = []
    with factory() as session:
        expired = session.execute(
            select(TrainingJob.id, TrainingJob.fencing_token, TrainingJob.attempt).where(
                TrainingJob.status == JobStatus.RUNNING, TrainingJob.lease_expires_at < now
            )
        ).all()
    for job_id, token, attempt in expired:
        lease = Lease(job_id, attempt, token, owner="reaper")
        if attempt >= max_attempts:
            reason = (
                f"The worker running this job stopped answering {attempt} times; "
                "the job was given up. Check /train workers, then /train retry."
            )
            if finish(factory, lease, rules, status=JobStatus.FAILED, error=reason):
                failed.append(job_id)
            continue
        with factory.begin() as session:
            moved = session.execute(
                update(TrainingJob)
                .where(_fenced(lease))
                .values(
                    status=JobStatus.QUEUED,
                    attempt=attempt + 1,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .returning(TrainingJob.ticket_id)
            ).scalar_one_or_none()
            if moved is None:
                continue
            enqueue_task(
                session,
                TaskName.TRAIN,
                {"job_id": job_id, "attempt": attempt + 1},
                job_id,
                attempt + 1,
            )
            repo.add_outbox(
                session,
                repo.OutboxItem(
                    OutboxKind.NOTICE.value,
                    {
                        "ticket_id": moved,
                        "text": f"The worker training job {job_id} stopped "
                        f"answering; it was re-queued (attempt {attempt + 1} of {max_attempts}) "
                        "and will resume from its last saved state.",
                    },
                    f"requeue:{job_id}:{attempt + 1}",
                ),
            )
        requeued.append(job_id)
    if requeued or failed:
        log.warning("reaper: re-queued %s, failed %s", requeued, failed)
    return ReapResult(requeued, failed)


def record_samples(
    factory: sessionmaker[Session],
    lease: Lease,
    stored: StoredObject,
    *,
    epoch: int,
    prompts: list[str],
) -> int:
    """Record a sample grid for `epoch` and ask the bot to post it for voting."""
    artifact_id = record_artifact(factory, lease, ArtifactKind.SAMPLE_GRID, stored, epoch=epoch)
    with factory.begin() as session:
        _check(session, lease)
        ticket_id = session.scalar(
            select(TrainingJob.ticket_id).where(TrainingJob.id == lease.job_id)
        )
        existing = session.scalar(
            select(SampleSet).where(SampleSet.job_id == lease.job_id, SampleSet.epoch == epoch)
        )
        sample_set = existing or SampleSet(ticket_id=ticket_id, job_id=lease.job_id, epoch=epoch)
        sample_set.grid_artifact_id, sample_set.prompts = artifact_id, prompts
        session.add(sample_set)
        session.flush()
        repo.add_outbox(
            session,
            repo.OutboxItem(
                OutboxKind.SAMPLE_GRID.value,
                {"sample_set_id": sample_set.id, "ticket_id": ticket_id},
                f"sample-grid:{sample_set.id}",
            ),
        )
        return sample_set.id


@dataclass(frozen=True, slots=True)
class DatasetImageRef:
    image_id: int
    storage_key: str
    caption: str


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a worker needs to run a job, read once at its start."""

    job_id: int
    ticket_id: int
    name: str
    version: int
    base_family: str
    trigger_word: str
    class_token: str
    preset: str | None
    overrides: dict[str, Any]
    state_key: str | None
    images: list[DatasetImageRef]


def job_context(session: Session, job_id: int) -> JobContext:
    job = session.get(TrainingJob, job_id)
    if job is None:
        raise LeaseLost(f"job {job_id} does not exist")
    ticket = session.get(Ticket, job.ticket_id)
    assert ticket is not None
    captions = repo.current_captions(session, ticket.id)
    rows = session.execute(
        select(DatasetImage.id, DatasetImage.storage_key)
        .where(DatasetImage.ticket_id == ticket.id, DatasetImage.status == ImageStatus.ACTIVE)
        .order_by(DatasetImage.id)
    ).all()
    return JobContext(
        job_id=job.id,
        ticket_id=ticket.id,
        name=ticket.name,
        version=ticket.version,
        base_family=ticket.base_family.value,
        trigger_word=ticket.trigger_word,
        class_token=ticket.class_token,
        preset=job.preset,
        overrides=dict(job.config),
        state_key=job.state_key,
        images=[DatasetImageRef(i, key, captions.get(i, "")) for i, key in rows],
    )

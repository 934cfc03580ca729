"""Training-job leases: exactly one worker owns a running job.

A worker *claims* the job row for one attempt (a conditional UPDATE that bumps the
fencing token), *renews* the lease while it runs, and writes results only while its
token is still the job's token. A duplicate or late delivery finds nothing to claim.
The reaper and the hand-back of a job (`db.reaper`) use the same fencing.
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
from db.services import TransitionRefused, apply_transition
from lab.lifecycle import Action, Actor, TicketState
from lab.settings import LabRules
from lab.storage import StoredObject
from lab.tasks import OutboxKind

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


def fenced(lease: Lease, expired_before: datetime | None = None) -> Any:
    held = (
        (TrainingJob.id == lease.job_id)
        & (TrainingJob.fencing_token == lease.token)
        & (TrainingJob.status == JobStatus.RUNNING)
    )
    if expired_before is not None:  # the reaper's writes: only while the lease is expired
        held &= TrainingJob.lease_expires_at < expired_before
    return held


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
            .where(fenced(lease))
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


def prune_states(factory: sessionmaker[Session], lease: Lease, keep: str) -> list[str]:
    """Forget the job's resumable states other than `keep` (its newest, recorded
    already): only the newest is ever resumed from. Returns their storage keys, for
    the caller to delete from storage."""
    with factory.begin() as session:
        _check(session, lease)
        old = session.scalars(
            select(Artifact).where(
                Artifact.job_id == lease.job_id,
                Artifact.kind == ArtifactKind.STATE,
                Artifact.storage_key != keep,
            )
        ).all()
        for row in old:
            session.delete(row)
        return [row.storage_key for row in old]


def _check(session: Session, lease: Lease) -> None:
    held = session.scalar(select(TrainingJob.id).where(fenced(lease)).with_for_update())
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
    expired_before: datetime | None = None,
) -> bool:
    """End the job (SUCCEEDED, FAILED or CANCELLED) and move its ticket along; False
    when the lease was lost meanwhile (someone else owns the outcome) or, with
    `expired_before` (the reaper), when its worker renewed it after all."""
    with factory.begin() as session:
        done = session.execute(
            update(TrainingJob)
            .where(fenced(lease, expired_before))
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


def resume_chain(session: Session, job_id: int) -> list[int]:
    """The job, then the job it resumed (`/train retry`), and so on, newest first."""
    chain: list[int] = []
    current: int | None = job_id
    while current is not None and current not in chain:
        chain.append(current)
        current = session.scalar(
            select(TrainingJob.resumes_job_id).where(TrainingJob.id == current)
        )
    return chain


def loras(session: Session, job_id: int) -> dict[int, Artifact]:
    """The LoRA file of every epoch the job's run has, by epoch: a retried job's
    earlier epochs were trained by the job it resumed (the newest job's file wins)."""
    rows = session.scalars(
        select(Artifact)
        .where(
            Artifact.job_id.in_(resume_chain(session, job_id)),
            Artifact.kind == ArtifactKind.LORA,
            Artifact.epoch.is_not(None),
        )
        .order_by(Artifact.job_id)
    )
    return dict(sorted({a.epoch: a for a in rows if a.epoch is not None}.items()))


def resumed_job_running(factory: sessionmaker[Session], job_id: int) -> bool:
    """Whether the job that `job_id` resumes is still RUNNING (a stop still saving its
    last state): the retried job waits for it before it is claimed."""
    with factory() as session:
        source = session.scalar(select(TrainingJob.resumes_job_id).where(TrainingJob.id == job_id))
        if source is None:
            return False
        status = session.scalar(select(TrainingJob.status).where(TrainingJob.id == source))
        return status is JobStatus.RUNNING


def newest_state(session: Session, job: TrainingJob) -> str | None:
    """The state a claimed job resumes from: its own newest (a re-queued attempt), else
    the newest of the job it resumes, read now, after a stop's last save, not when
    the retry was asked."""
    own = session.scalar(
        select(Artifact.id).where(Artifact.job_id == job.id, Artifact.kind == ArtifactKind.STATE)
    )
    if own is None and job.resumes_job_id is not None:
        source = session.get(TrainingJob, job.resumes_job_id)
        if source is not None and source.id != job.id:
            return newest_state(session, source) or job.state_key
    return job.state_key


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
        state_key=newest_state(session, job),
        images=[DatasetImageRef(i, key, captions.get(i, "")) for i, key in rows],
    )

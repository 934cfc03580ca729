"""What a ticket transition does to its training jobs, inside the same transaction.

Kept apart from the policy (lab.lifecycle decides *whether*; this says *what else
changes*), and run by `db.services.apply_transition` after its compare-and-set won.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from db import repositories as repo
from db.base import utcnow
from db.models import ContributionKind, JobStatus, TrainingJob
from db.outbox import enqueue_task
from lab.lifecycle import Action, Actor
from lab.tasks import TaskName

Effect = Callable[[Session, int, Actor], None]


def _start(session: Session, ticket_id: int, actor: Actor) -> None:
    job = repo.latest_job(session, ticket_id)
    assert job is not None and job.status is JobStatus.QUEUED  # the policy checked it
    job.attempt += 1
    job.started_by_id = actor.member_id
    session.flush()
    enqueue_task(
        session, TaskName.TRAIN, {"job_id": job.id, "attempt": job.attempt}, job.id, job.attempt
    )


def _stop(session: Session, ticket_id: int, actor: Actor) -> None:
    """Ask a running job to stop (the trainer saves its state and exits within a step);
    a job no worker has picked up yet is cancelled at once."""
    job = repo.latest_job(session, ticket_id)
    if job is None:
        return
    if job.status is JobStatus.RUNNING:
        job.stop_requested = True
    elif job.status is JobStatus.QUEUED and job.attempt > 0:
        job.status = JobStatus.CANCELLED
        job.finished_at = utcnow()


def _next_job(*, resume: bool) -> Effect:
    def effect(session: Session, ticket_id: int, actor: Actor) -> None:
        previous = repo.latest_job(session, ticket_id)
        if previous is None:
            return
        session.add(
            TrainingJob(
                ticket_id=ticket_id,
                config=dict(previous.config),
                preset=previous.preset,
                state_key=previous.state_key if resume else None,
                state_epoch=previous.state_epoch if resume else None,
            )
        )

    return effect


def _claimed(session: Session, ticket_id: int, actor: Actor) -> None:
    assert actor.member_id is not None
    repo.record_contribution(session, ticket_id, actor.member_id, ContributionKind.TRAIN)


EFFECTS: dict[Action, Effect] = {
    Action.START_TRAINING: _start,
    Action.STOP_TRAINING: _stop,
    Action.CANCEL: _stop,
    Action.REJECT: _stop,
    Action.RETRY: _next_job(resume=True),
    Action.RETRAIN: _next_job(resume=False),
    Action.CLAIM: _claimed,
}

"""What a ticket transition causes, inside the same transaction: the one table.

Kept apart from the policy (lab.lifecycle decides *whether*; this says *what else
changes*), and run by `db.services.apply_transition` after its compare-and-set won, for
every caller alike: a member's button, the inactivity timer, a worker ending a job.
Each effect receives one `TransitionContext` and writes rows (jobs, contributions,
outbox messages) in the caller's session; nothing leaves the process before the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db import repositories as repo
from db.base import utcnow
from db.models import ContributionKind, JobStatus, SampleSet, Ticket, TrainingJob
from db.outbox import enqueue_task
from lab.lifecycle import Action, Actor, TicketFacts, TicketState
from lab.settings import LabRules
from lab.tasks import OutboxKind, TaskName


@dataclass(frozen=True, slots=True)
class TransitionResult:
    ticket_id: int
    number: int
    from_state: TicketState
    to_state: TicketState | None
    revision: int
    """The ticket's revision after the transition (unchanged when nothing moved)."""


@dataclass(frozen=True, slots=True)
class TransitionContext:
    """Everything an effect may use: the transaction, the moved ticket (re-read after the
    compare-and-set), who moved it, the ticket as the policy saw it before, and why."""

    session: Session
    ticket: Ticket
    action: Action
    actor: Actor
    result: TransitionResult
    before: TicketFacts
    rules: LabRules
    reason: str | None = None

    @property
    def ticket_id(self) -> int:
        return self.result.ticket_id


Effect = Callable[[TransitionContext], None]


def _start(ctx: TransitionContext) -> None:
    job = repo.latest_job(ctx.session, ctx.ticket_id)
    assert job is not None and job.status is JobStatus.QUEUED  # the policy checked it
    job.attempt += 1
    job.started_by_id = ctx.actor.member_id
    ctx.session.flush()
    enqueue_task(
        ctx.session,
        TaskName.TRAIN,
        {"job_id": job.id, "attempt": job.attempt},
        job.id,
        job.attempt,
    )


def _progress_message(ctx: TransitionContext) -> None:
    """The run's progress message, posted now and edited as the worker reports."""
    job = repo.latest_job(ctx.session, ctx.ticket_id)
    assert job is not None
    _post(
        ctx,
        OutboxKind.JOB_PROGRESS,
        {"job_id": job.id},
        f"job-progress:{job.id}:{job.attempt}:start",
    )


def _stop(ctx: TransitionContext) -> None:
    """Ask a running job to stop (the trainer saves its state and exits within a step);
    a job no worker has picked up yet is cancelled at once."""
    job = repo.latest_job(ctx.session, ctx.ticket_id)
    if job is None:
        return
    if job.status is JobStatus.RUNNING:
        job.stop_requested = True
    elif job.status is JobStatus.QUEUED and job.attempt > 0:
        job.status = JobStatus.CANCELLED
        job.finished_at = utcnow()


def _first_job(ctx: TransitionContext) -> None:
    """An approved ticket offers a job (configured later by its claimer)."""
    if repo.latest_job(ctx.session, ctx.ticket_id) is None:
        ctx.session.add(TrainingJob(ticket_id=ctx.ticket_id, config={}))


def _next_job(*, resume: bool) -> Effect:
    """A new job with the previous one's configuration; `resume` also copies the saved
    trainer state, so a retried run continues where the failed one stopped."""

    def effect(ctx: TransitionContext) -> None:
        previous = repo.latest_job(ctx.session, ctx.ticket_id)
        if previous is None:
            return
        ctx.session.add(
            TrainingJob(
                ticket_id=ctx.ticket_id,
                config=dict(previous.config),
                preset=previous.preset,
                state_key=previous.state_key if resume else None,
                state_epoch=previous.state_epoch if resume else None,
                resumes_job_id=previous.id if resume else None,
            )
        )

    return effect


def _claimed(ctx: TransitionContext) -> None:
    assert ctx.actor.member_id is not None
    repo.record_contribution(
        ctx.session, ctx.ticket_id, ctx.actor.member_id, ContributionKind.TRAIN
    )


def _board(ctx: TransitionContext) -> None:
    """Post, edit or close the ticket's #job-board message (offer, claimed by, withdrawn)."""
    _post(
        ctx,
        OutboxKind.JOB_BOARD,
        {"ticket_id": ctx.ticket_id},
        f"job-board:{ctx.ticket_id}:{ctx.result.revision}",
    )


def _release_post(ctx: TransitionContext) -> None:
    _post(ctx, OutboxKind.RELEASE, {"ticket_id": ctx.ticket_id}, f"release:{ctx.ticket_id}")


def _close_voting(ctx: TransitionContext) -> None:
    """The ticket left TESTING (released, rejected, cancelled, sent back to retrain): its
    sample grids stop offering vote buttons (the policy already refuses the votes)."""
    has_samples = ctx.session.scalar(
        select(SampleSet.id).where(SampleSet.ticket_id == ctx.ticket_id).limit(1)
    )
    if has_samples is None:
        return
    _post(
        ctx,
        OutboxKind.CLOSE_VOTING,
        {"ticket_id": ctx.ticket_id},
        f"close-voting:{ctx.ticket_id}:{ctx.result.revision}",
    )


def _idle_notice(ctx: TransitionContext) -> None:
    """The inactivity timer (the lab, not a member) put a claimed job back on the board."""
    if not ctx.actor.is_system:
        return
    name = ctx.before.claimer_name or "The trainer"
    _notice(
        ctx,
        f"⏰ {name} had no activity on this job for {ctx.rules.claim_inactivity_hours:g} "
        "hours, so it is back on #job-board for any Trainer to claim.",
        f"auto-unclaim:{ctx.ticket_id}:{ctx.result.revision}",
    )


def _reason_notice(ctx: TransitionContext) -> None:
    """A member who gives a reason has it said in the ticket's thread. The lab's own
    reasons (a failed run's error) are told by the message of their event instead."""
    if not ctx.reason or ctx.actor.is_system or ctx.result.to_state is None:
        return
    _notice(
        ctx,
        f"**{ctx.actor.display_name}** moved this ticket to "
        f"{ctx.result.to_state.value.upper()}: {ctx.reason}",
        f"notice:{ctx.ticket_id}:{ctx.action.value}:{ctx.result.revision}",
    )


def _notice(ctx: TransitionContext, text: str, key: str) -> None:
    _post(ctx, OutboxKind.NOTICE, {"ticket_id": ctx.ticket_id, "text": text}, key)


def _post(ctx: TransitionContext, kind: OutboxKind, payload: dict[str, object], key: str) -> None:
    """One outbox row for the bot, sent once the transition's transaction commits."""
    repo.add_outbox(ctx.session, repo.OutboxItem(kind.value, payload, key))


def _card(ctx: TransitionContext) -> None:
    """The ticket card shows the new status."""
    repo.queue_card_refresh(ctx.session, ctx.ticket_id, f"{ctx.ticket_id}:{ctx.result.revision}")


EVERY_TRANSITION: tuple[Effect, ...] = (_card,)
"""Run first, for every transition that moved the ticket."""

EFFECTS: dict[Action, tuple[Effect, ...]] = {
    Action.APPROVE: (_first_job, _board),
    Action.CLAIM: (_claimed, _board),
    Action.UNCLAIM: (_board, _idle_notice),
    Action.START_TRAINING: (_start, _progress_message, _board),
    Action.STOP_TRAINING: (_stop,),
    Action.CANCEL: (_stop, _board, _close_voting),
    Action.REJECT: (_stop, _board, _close_voting),
    Action.RETRY: (_next_job(resume=True),),
    Action.RETRAIN: (_next_job(resume=False), _close_voting),
    Action.RELEASE: (_release_post, _close_voting),
}
"""The action's own consequences, in order."""

LAST: tuple[Effect, ...] = (_reason_notice,)
"""Run after the action's own effects, for every transition."""


def run_effects(ctx: TransitionContext) -> None:
    for effect in (*EVERY_TRANSITION, *EFFECTS.get(ctx.action, ()), *LAST):
        effect(ctx)

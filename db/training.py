"""Training services for the bot: the job a ticket offers, its configuration, what
the progress message and the release post show. One transaction per function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import jobs
from db import repositories as repo
from db.base import utcnow
from db.models import JobStatus, Member, Ticket, TrainingJob, Worker
from db.refs import TicketKey, ticket_id_in
from db.services import DbError, NotFound, TransitionRefused, apply_transition, get_ticket, require
from db.tickets import Who, actor_in
from lab.apps import compat_filename, job_is_dora
from lab.lifecycle import Action, Actor, TicketState
from lab.settings import LabRules

Factory = sessionmaker[Session]


@dataclass(frozen=True, slots=True)
class JobView:
    id: int
    ticket_id: int
    status: str
    attempt: int
    preset: str | None
    config: dict[str, Any]
    progress: dict[str, Any]
    error: str | None
    progress_message_id: int | None
    lora_epochs: tuple[int, ...]


def _view(session: Session, job: TrainingJob) -> JobView:
    epochs = jobs.loras(session, job.id)  # a retried job's run includes the earlier job's
    return JobView(
        id=job.id,
        ticket_id=job.ticket_id,
        status=job.status.value,
        attempt=job.attempt,
        preset=job.preset,
        config=dict(job.config or {}),
        progress=dict(job.progress or {}),
        error=job.error,
        progress_message_id=job.progress_message_id,
        lora_epochs=tuple(epochs),
    )


def job_view(factory: Factory, job_id: int) -> JobView:
    with factory() as session:
        job = session.get(TrainingJob, job_id)
        if job is None:
            raise NotFound(f"Training job {job_id} does not exist.")
        return _view(session, job)


def latest_job_view(factory: Factory, ticket_id: TicketKey) -> JobView | None:
    with factory() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        job = repo.latest_job(session, ticket_id)
        return _view(session, job) if job else None


def record_progress_message(factory: Factory, job_id: int, message_id: int) -> None:
    with factory.begin() as session:
        job = session.get(TrainingJob, job_id)
        if job is not None:
            job.progress_message_id = message_id


def configure(
    factory: Factory,
    who: Who,
    ticket_id: TicketKey,
    rules: LabRules,
    *,
    preset: str = "",
    config: dict[str, Any] | None = None,
    build: Callable[[str], tuple[str, dict[str, Any]]] | None = None,
) -> JobView:
    """Set the next run's preset and configuration (the claimer or a Lab Admin, CLAIMED).
    `build(family)` makes them from the ticket's base family, in the same transaction
    (the bot's `/train config` knows the ticket only by its `TicketRef`)."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        actor = actor_in(session, who)
        ticket = get_ticket(session, ticket_id)
        require(session, ticket, Action.CONFIGURE_TRAINING, actor, rules)
        if build is not None:
            preset, config = build(ticket.base_family.value)
        if not preset or config is None:
            raise DbError("A training configuration needs a preset.", code="no_preset")
        job = repo.latest_job(session, ticket_id)
        if job is None or job.status is not JobStatus.QUEUED or job.attempt > 0:
            job = TrainingJob(ticket_id=ticket_id)
            session.add(job)
        job.preset = preset
        job.config = config
        ticket.last_activity_at = utcnow()
        session.flush()
        return _view(session, job)


def unclaim_idle(factory: Factory, rules: LabRules, *, now: datetime) -> list[tuple[int, str]]:
    """Return claimed jobs idle for `claim_inactivity_hours` to READY (the lab acts; the
    board and the notice in the thread are the transition's effects); returns (ticket
    id, former claimer's name) for each, to notify them."""
    cutoff = now - timedelta(hours=rules.claim_inactivity_hours)
    released: list[tuple[int, str]] = []
    with factory() as session:
        idle = session.scalars(
            select(Ticket.id).where(
                Ticket.status == TicketState.CLAIMED, Ticket.last_activity_at < cutoff
            )
        ).all()
    for ticket_id in idle:
        with factory.begin() as session:
            ticket = session.get(Ticket, ticket_id)
            if ticket is None or ticket.status is not TicketState.CLAIMED:
                continue
            name = ""
            if ticket.claimer_id is not None:
                claimer = session.get(Member, ticket.claimer_id)
                name = claimer.display_name if claimer else ""
            try:
                apply_transition(session, ticket_id, Action.UNCLAIM, Actor.system(), rules)
            except TransitionRefused:
                continue
            released.append((ticket_id, name))
    return released


@dataclass(frozen=True, slots=True)
class ReleaseView:
    epoch: int | None
    lora_key: str | None
    lora_size: int
    filename: str
    steps: int | None
    epochs: int | None
    suggested_weight: float
    dora: bool = False
    compat_key: str | None = None
    """DoRA: where the worker stored the plain-LoRA fit beside the DoRA file."""


def release_view(factory: Factory, ticket_id: int) -> ReleaseView:
    """The file (or link) and numbers the #releases post shows."""
    with factory() as session:
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            raise NotFound(f"Ticket {ticket_id} does not exist.")
        artifact = None
        job = session.scalar(
            select(TrainingJob)
            .where(TrainingJob.ticket_id == ticket_id, TrainingJob.status == JobStatus.SUCCEEDED)
            .order_by(TrainingJob.id.desc())
            .limit(1)
        )
        if job is not None and ticket.chosen_epoch is not None:
            artifact = jobs.loras(session, job.id).get(ticket.chosen_epoch)
        config = dict(job.config or {}) if job else {}
        dora = job is not None and job_is_dora(job.preset, config)
        return ReleaseView(
            epoch=ticket.chosen_epoch,
            lora_key=artifact.storage_key if artifact else None,
            lora_size=artifact.size_bytes if artifact else 0,
            filename=f"{ticket.trigger_word}-v{ticket.version}-e{ticket.chosen_epoch or 0}"
            ".safetensors",
            steps=(job.progress or {}).get("total_steps") if job else None,
            epochs=config.get("max_train_epochs"),
            suggested_weight=float(config.get("suggested_weight", 0.8)),
            dora=dora,
            compat_key=compat_filename(artifact.storage_key) if dora and artifact else None,
        )


def start(factory: Factory, who: Who, ticket_id: TicketKey, rules: LabRules) -> JobView:
    """CLAIMED → TRAINING; the transition's effects queue the training task and the
    progress message."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        actor = actor_in(session, who)
        apply_transition(session, ticket_id, Action.START_TRAINING, actor, rules)
        job = repo.latest_job(session, ticket_id)
        assert job is not None
        return _view(session, job)


@dataclass(frozen=True, slots=True)
class WorkerLine:
    name: str
    gpu: str
    queues: tuple[str, ...]
    busy_job: int | None
    heartbeat_at: datetime


def workers(factory: Factory) -> list[WorkerLine]:
    with factory() as session:
        rows = session.scalars(select(Worker).order_by(Worker.name)).all()
        return [
            WorkerLine(
                w.name,
                f"{w.gpu_name} ({w.gpu_memory_mb} MB)" if w.gpu_name else "CPU",
                tuple(w.queues or ()),
                w.current_job_id,
                w.heartbeat_at,
            )
            for w in rows
        ]

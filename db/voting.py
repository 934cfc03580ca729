"""Votes on sample grids: one per member per sample set, changeable; tallies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.base import utcnow
from db.limits import SAMPLES_REQUESTED, check_and_record_task
from db.models import Artifact, ContributionKind, SampleSet, Ticket, Vote
from db.outbox import enqueue_task
from db.refs import TicketKey, ticket_id_in
from db.services import NotFound, get_ticket, require
from db.tickets import Who, actor_in
from lab.lifecycle import Action
from lab.prompts import check_prompt
from lab.settings import LabRules
from lab.tasks import OutboxKind, TaskName

Factory = sessionmaker[Session]


@dataclass(frozen=True, slots=True)
class SampleSetView:
    id: int
    ticket_id: int
    job_id: int | None
    epoch: int | None
    prompts: tuple[str, ...]
    grid_key: str | None
    message_id: int | None
    testing_message_id: int | None
    up: int
    down: int


def _tally(session: Session, sample_set_id: int) -> tuple[int, int]:
    rows = dict(
        session.execute(
            select(Vote.value, func.count())
            .where(Vote.sample_set_id == sample_set_id)
            .group_by(Vote.value)
        ).all()
    )
    return rows.get(1, 0), rows.get(-1, 0)


def _view(session: Session, sample: SampleSet) -> SampleSetView:
    grid = session.get(Artifact, sample.grid_artifact_id) if sample.grid_artifact_id else None
    up, down = _tally(session, sample.id)
    return SampleSetView(
        sample.id,
        sample.ticket_id,
        sample.job_id,
        sample.epoch,
        tuple(sample.prompts or ()),
        grid.storage_key if grid else None,
        sample.message_id,
        sample.testing_message_id,
        up,
        down,
    )


def sample_set_view(factory: Factory, sample_set_id: int) -> SampleSetView:
    with factory() as session:
        sample = session.get(SampleSet, sample_set_id)
        if sample is None:
            raise NotFound("This sample set no longer exists.", code="no_sample_set")
        return _view(session, sample)


def ticket_sample_sets(factory: Factory, ticket_id: int) -> list[SampleSetView]:
    """Every sample set of the ticket, oldest first (to close their voting)."""
    with factory() as session:
        samples = session.scalars(
            select(SampleSet).where(SampleSet.ticket_id == ticket_id).order_by(SampleSet.id)
        ).all()
        return [_view(session, sample) for sample in samples]


def record_sample_message(
    factory: Factory, sample_set_id: int, message_id: int, testing_message_id: int | None
) -> None:
    """Where the grid was posted: the ticket's post, and its copy in #testing."""
    with factory.begin() as session:
        sample = session.get(SampleSet, sample_set_id)
        if sample is not None:
            sample.message_id = message_id
            sample.testing_message_id = testing_message_id


@dataclass(frozen=True, slots=True)
class VoteResult:
    changed: bool
    """False for a first vote, True when the member changed an earlier one."""
    up: int
    down: int


def cast_vote(
    factory: Factory, who: Who, sample_set_id: int, value: int, rules: LabRules
) -> VoteResult:
    """Record the member's vote (+1/-1) on a sample set; voting again replaces it."""
    if value not in (1, -1):
        raise ValueError("a vote is +1 or -1")
    with factory.begin() as session:
        actor = actor_in(session, who)
        sample = session.get(SampleSet, sample_set_id)
        if sample is None:
            raise NotFound("This sample set no longer exists.", code="no_sample_set")
        ticket = session.get(Ticket, sample.ticket_id)
        assert ticket is not None
        require(session, ticket, Action.VOTE, actor, rules)
        assert actor.member_id is not None
        changed = session.get(Vote, (sample.id, actor.member_id)) is not None
        _upsert_vote(session, sample.id, actor.member_id, value)
        if not changed:
            repo.record_contribution(session, ticket.id, actor.member_id, ContributionKind.TEST)
        up, down = _tally(session, sample.id)
        # One key per vote cast: a tally can repeat (up, down, up again), a vote cannot.
        change = f"{sample.id}:{actor.member_id}:{uuid.uuid4().hex[:16]}"
        repo.queue_card_refresh(session, ticket.id, f"vote:{change}")
        repo.add_outbox(
            session,
            repo.OutboxItem(
                OutboxKind.SAMPLE_TALLY.value, {"sample_set_id": sample.id}, f"tally:{change}"
            ),
        )
        return VoteResult(changed, up, down)


def _upsert_vote(session: Session, sample_set_id: int, member_id: int, value: int) -> None:
    """INSERT … ON CONFLICT DO UPDATE: two clicks at once leave one vote, never an error."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    statement = insert(Vote).values(
        sample_set_id=sample_set_id, member_id=member_id, value=value, updated_at=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Vote.sample_set_id, Vote.member_id],
            set_={"value": value, "updated_at": now},
        )
    )
    session.expire_all()


def request_samples(
    factory: Factory, who: Who, ticket_id: TicketKey, prompts: list[str], rules: LabRules
) -> int:
    """A new sample set with the member's prompts; the SAMPLE task renders it."""
    prompts = [check_prompt(p) for p in prompts]

    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        actor = actor_in(session, who)
        ticket = get_ticket(session, ticket_id)
        require(session, ticket, Action.REQUEST_SAMPLES, actor, rules)
        assert actor.member_id is not None
        check_and_record_task(session, ticket, actor.member_id, SAMPLES_REQUESTED)
        job = repo.latest_job(session, ticket_id)
        sample = SampleSet(ticket_id=ticket_id, job_id=job.id if job else None, prompts=prompts)
        session.add(sample)
        session.flush()
        if job is not None:
            enqueue_task(
                session,
                TaskName.SAMPLE,
                {"job_id": job.id, "sample_set_id": sample.id},
                job.id,
                sample.id,
            )
        return sample.id

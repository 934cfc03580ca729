"""Two members click Claim on the same job at the same moment: exactly one wins.

These tests commit for real on two separate connections (threads), so each runs on a
database of its own: committed claims never leak into other tests.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

import db.services as services
from db import migrate
from db import repositories as repo
from db.models import AuditEntry, Ticket
from db.session import make_engine, make_session_factory
from lab.lifecycle import Action, Actor, LabRole, RefusalCode, TicketState
from lab.settings import LabRules
from tests.conftest import fresh_postgres_database
from tests.db.conftest import new_snowflake, sample_ticket
from tests.db.test_services import add_images

RULES = LabRules()


def _ready_ticket(factory: sessionmaker[Session]) -> tuple[int, list[Actor]]:
    """A READY ticket and two trainers, committed."""
    with factory.begin() as session:
        guild = repo.get_or_create_guild(session, new_snowflake(), "Race Lab")
        owner = repo.get_or_create_member(session, guild.id, new_snowflake(), "owner")
        trainers = []
        for name in ("tina", "theo"):
            member = repo.get_or_create_member(session, guild.id, new_snowflake(), name)
            trainers.append(member)
        ticket = services.open_ticket(session, guild.id, owner, sample_ticket())
        session.flush()
        ticket.status = TicketState.READY
        ticket_id = ticket.id
        trainer = frozenset({LabRole.TRAINER})
        actors = [Actor(m.id, trainer, display_name=m.display_name) for m in trainers]
    with factory() as session:
        add_images(session, ticket_id, actors[0].member_id, 15, caption="ar1a, woman")
    return ticket_id, actors


def _claim_concurrently(factory, ticket_id: int, actors: list[Actor]) -> list[object]:
    def claim(actor: Actor) -> object:
        try:
            return services.transition(factory, ticket_id, Action.CLAIM, actor, RULES)
        except services.TransitionRefused as refused:
            return refused

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(claim, actors))


def _assert_one_winner(factory, ticket_id: int, actors: list[Actor], outcomes: list[object]):
    winners = [o for o in outcomes if isinstance(o, services.TransitionResult)]
    losers = [o for o in outcomes if isinstance(o, services.TransitionRefused)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    winner_actor = actors[outcomes.index(winners[0])]
    assert losers[0].refusal.code is RefusalCode.ALREADY_CLAIMED
    assert str(losers[0]) == f"This job was already claimed by {winner_actor.display_name}."
    with factory() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket.status is TicketState.CLAIMED
        assert ticket.claimer_id == winner_actor.member_id
        claims = session.scalars(
            select(AuditEntry.actor_id).where(
                AuditEntry.ticket_id == ticket_id, AuditEntry.action == "claim"
            )
        ).all()
        assert claims == [winner_actor.member_id]


@pytest.mark.postgres
def test_claim_race_on_postgres_both_read_ready_then_exactly_one_wins(
    monkeypatch: pytest.MonkeyPatch,
):
    """Both transactions read the ticket as READY (a barrier holds them there), then both
    write: the compare-and-set UPDATE lets exactly one through."""
    with fresh_postgres_database() as url:
        migrate.upgrade(url)
        engine = make_engine(url)
        try:
            _race_with_barrier(engine, monkeypatch)
        finally:
            engine.dispose()


def _race_with_barrier(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    factory = make_session_factory(engine)
    ticket_id, actors = _ready_ticket(factory)

    both_have_read = threading.Barrier(2, timeout=20)
    real_facts = services.repo.ticket_facts

    def facts_then_wait(session, ticket, **options):
        facts = real_facts(session, ticket, **options)
        both_have_read.wait()
        return facts

    monkeypatch.setattr(services.repo, "ticket_facts", facts_then_wait)
    outcomes = _claim_concurrently(factory, ticket_id, actors)
    assert both_have_read.n_waiting == 0 and not both_have_read.broken
    _assert_one_winner(factory, ticket_id, actors, outcomes)


def test_claim_race_exactly_one_wins(empty_database_url: str):
    """Two threads, two connections, no choreography, on each backend."""
    migrate.upgrade(empty_database_url)
    engine = make_engine(empty_database_url)
    factory = make_session_factory(engine)
    for _ in range(5):
        ticket_id, actors = _ready_ticket(factory)
        outcomes = _claim_concurrently(factory, ticket_id, actors)
        _assert_one_winner(factory, ticket_id, actors, outcomes)
    engine.dispose()

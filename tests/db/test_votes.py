"""Votes and release (issue 14, point 6), on SQLite and Postgres: votes are upserts (the
same vote twice is no incident), the quorum counts every sample set of the run at the
release epoch (a new /test prompts set does not reset it), the requester's and the
claimer's votes do not count by default, and a release needs an epoch with a file."""

from __future__ import annotations

import pytest

from db import repositories as repo
from db.models import Artifact, ArtifactKind, SampleSet, Ticket
from db.services import TransitionRefused
from db.tickets import act, ticket_card
from db.voting import cast_vote
from lab.lifecycle import Action, LabRole, TicketState
from lab.settings import LabRules
from tests.db.conftest import new_snowflake
from tests.db.test_bot_services import RULES, _ready, who


def ticket_in_testing(factory, guild: int, *, epochs: int = 2) -> tuple[int, int, object]:
    """A ticket in TESTING claimed by tara, its run saved `epochs` epochs; (ticket, set, tara)."""
    ticket_id, _ = _ready(factory, guild)
    tara = who(guild, "tara", LabRole.TRAINER)
    act(factory, tara, ticket_id, Action.CLAIM, RULES)
    with factory.begin() as session:
        ticket = session.get(Ticket, ticket_id)
        ticket.status = TicketState.TESTING
        job = repo.latest_job(session, ticket_id)
        for epoch in range(1, epochs + 1):
            session.add(
                Artifact(job_id=job.id, kind=ArtifactKind.LORA, epoch=epoch,
                         storage_key=f"jobs/{job.id}/e{epoch}", sha256="0" * 64, size_bytes=1)
            )  # fmt: skip
        sample = SampleSet(ticket_id=ticket_id, job_id=job.id, epoch=epochs, prompts=["ar1a"])
        session.add(sample)
        session.flush()
        return ticket_id, sample.id, tara


def test_the_same_vote_twice_is_no_incident(factory):
    guild = new_snowflake()
    _, sample_id, _ = ticket_in_testing(factory, guild)
    tess = who(guild, "tess", LabRole.TESTER)
    results = [cast_vote(factory, tess, sample_id, v, RULES) for v in (1, -1, 1, 1)]
    assert [(r.up, r.down) for r in results] == [(1, 0), (0, 1), (1, 0), (1, 0)]


def test_a_new_sample_set_adds_to_the_quorum_never_resets_it(factory):
    guild = new_snowflake()
    ticket_id, first, _ = ticket_in_testing(factory, guild)
    testers = [who(guild, f"tess{i}", LabRole.TESTER) for i in range(3)]
    for tester in testers:
        cast_vote(factory, tester, first, 1, RULES)
    with factory.begin() as session:  # a tester's /test prompts, rendered at epoch 2
        job = repo.latest_job(session, ticket_id)
        second = SampleSet(ticket_id=ticket_id, job_id=job.id, epoch=2, prompts=["ar1a, beach"])
        session.add(second)
        session.flush()
        second_id = second.id
    cast_vote(factory, testers[0], second_id, 1, RULES)  # the same member: counted once
    assert (
        ticket_card(factory, ticket_id).votes_up,
        ticket_card(factory, ticket_id).votes_down,
    ) == (3, 0)
    assert act(factory, who(guild, "rita"), ticket_id, Action.RELEASE, RULES, epoch=2) is (
        TicketState.RELEASED
    )


def test_the_requester_and_the_claimer_do_not_count_by_default(factory):
    guild = new_snowflake()
    ticket_id, sample_id, tara = ticket_in_testing(factory, guild)
    rita = who(guild, "rita", LabRole.TESTER)
    tara = who(guild, "tara", LabRole.TRAINER, LabRole.TESTER)
    tess = who(guild, "tess", LabRole.TESTER)
    for voter in (rita, tara, tess):
        cast_vote(factory, voter, sample_id, 1, RULES)
    rules = LabRules(release_quorum=2)
    with pytest.raises(TransitionRefused, match="Testers have cast 1 votes"):
        act(factory, who(guild, "rita"), ticket_id, Action.RELEASE, rules, epoch=2)
    counted = LabRules(release_quorum=2, count_own_votes=True)
    assert act(factory, who(guild, "rita"), ticket_id, Action.RELEASE, counted, epoch=2) is (
        TicketState.RELEASED
    )


def test_a_release_needs_an_epoch_with_a_file(factory):
    guild = new_snowflake()
    ticket_id, _, _ = ticket_in_testing(factory, guild, epochs=2)
    admin = who(guild, "ada", LabRole.ADMIN)
    with pytest.raises(
        TransitionRefused, match=r"Epoch 999 has no LoRA file in this run \(saved epochs: 1, 2\)"
    ):
        act(factory, admin, ticket_id, Action.RELEASE, RULES, epoch=999, admin_override=True)
    assert ticket_card(factory, ticket_id).status is TicketState.TESTING

"""Voting closes when a ticket leaves TESTING: both copies of every sample grid show
disabled buttons, and a click that raced the edit is refused and changes no vote."""

from __future__ import annotations

import pytest
from simcord import SetupError
from sqlalchemy import select

from db import repositories as repo
from db.models import SampleSet, Ticket, Vote
from db.tickets import act, choose_epoch
from lab.lifecycle import Action, LabRole, TicketState
from tests.bot.conftest import followup_text, running_lab, who_of
from tests.bot.matrix_setup import members, ticket_in

pytestmark = pytest.mark.anyio


def _votes(lab) -> list[tuple[int, int, int]]:
    with lab.factory() as session:
        rows = session.scalars(select(Vote)).all()
        return sorted((v.sample_set_id, v.member_id, v.value) for v in rows)


def _buttons(message) -> list[dict]:
    return [c for row in message.components for c in row.children]


def _grids(lab) -> list:
    """The grid in the ticket's post and its copy in #testing."""
    thread = lab.channel("lab-requests").threads[-1]
    return [
        next(m for m in channel.history() if m.embeds and m.embeds[0].title.startswith("Samples"))
        for channel in (thread, lab.channel("testing"))
    ]


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (Action.RELEASE, "RELEASED"),
        (Action.REJECT, "REJECTED"),
        (Action.CANCEL, "CANCELLED"),
        (Action.RETRAIN, "CLAIMED"),
    ],
)
async def test_leaving_testing_closes_the_vote_buttons(tmp_path, template_db, action, state):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.TESTING)
        await lab.relay()
        grid, _ = _grids(lab)
        voted = await people["tester"].click(grid, label="Good")
        assert "You voted 👍" in followup_text(voted)
        before = _votes(lab)
        assert len(before) == 1

        # The ticket moves on (a service call: the relay has not edited the grids yet).
        admin = who_of(lab, people["admin"], LabRole.ADMIN)
        with lab.factory() as session:
            ticket_id = session.scalars(select(Ticket.id).where(Ticket.number == number)).one()
        if action is Action.RELEASE:
            choose_epoch(lab.factory, ticket_id, 2)
        act(lab.factory, admin, ticket_id, action, lab.bot.rules, admin_override=True,
            reason="not this one" if action is Action.REJECT else None)  # fmt: skip

        # A click on the still-active button (the edit has not reached this member).
        late = await people["tester"].click(grid, label="Not yet")
        assert late.ephemeral
        assert followup_text(late) == f"You can't vote on samples while the ticket is {state}."
        assert _votes(lab) == before

        await lab.relay()
        for copy in _grids(lab):
            buttons = _buttons(copy)
            assert [b.label for b in buttons] == ["Good", "Not yet"]
            assert all(b.disabled for b in buttons), copy.id
            with pytest.raises(SetupError, match="disabled"):
                await people["tester"].click(copy, label="Good")
        assert _votes(lab) == before


async def test_a_grid_posted_after_release_comes_closed(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.RELEASED)
        await lab.relay()
        with lab.factory.begin() as session:  # a sample render that finished late
            ticket_id = session.scalars(select(Ticket.id).where(Ticket.number == number)).one()
            late = SampleSet(ticket_id=ticket_id, epoch=1, prompts=["ar1a, woman, smiling"])
            session.add(late)
            session.flush()
            item = repo.OutboxItem("discord.sample_grid", {"sample_set_id": late.id}, "late")
            repo.add_outbox(session, item)
            late_id = late.id
        await lab.relay()
        thread = lab.channel("lab-requests").threads[-1]
        for channel in (thread, lab.channel("testing")):
            grids = [m for m in channel.history() if m.embeds and "Samples" in m.embeds[0].title]
            assert len(grids) == 2
            buttons = _buttons(grids[-1])
            assert all(f"lora:vote:{late_id}:" in b.custom_id for b in buttons)
            assert buttons and all(b.disabled for b in buttons)
        assert _votes(lab) == []

"""Every ticket command and button × every kind of member: the bot itself checks the
lifecycle policy, and a refused member reads the policy's message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from db.models import DatasetImage, Ticket
from db.voting import cast_vote
from lab.families import BaseFamily
from lab.lifecycle import Action, Actor, RefusalCode, Refused, TicketFacts, TicketState, decide
from tests.bot.conftest import followup_text, running_lab, seed_images, who_of
from tests.bot.images import png
from tests.bot.matrix_setup import LAB_ROLES, ROLE_OF, members, ticket_in

pytestmark = pytest.mark.anyio
S = TicketState


@dataclass(frozen=True)
class Case:
    command: str
    state: TicketState
    action: Action
    ok: str
    options: dict[str, Any]
    button: str | None = None


CASES = [
    Case("dataset upload", S.DATASET, Action.EDIT_DATASET, "files added",
         {"file": ("a.png", png(1))}),
    Case("dataset remove", S.DATASET, Action.EDIT_DATASET, "Removed image", {"image": "first"}),
    Case("dataset done", S.DATASET, Action.FINISH_DATASET, "captioning is open", {}),
    Case("dataset approve", S.REVIEW, Action.APPROVE, "Approved", {}),
    Case("dataset request-changes", S.REVIEW, Action.REQUEST_DATASET_CHANGES,
         "Changes requested", {"reason": "two blurry shots"}),
    Case("caption bulk", S.CAPTIONING, Action.EDIT_CAPTIONS, "captions changed",
         {"operation": "add", "tag": "smile"}),
    Case("caption edit", S.CAPTIONING, Action.EDIT_CAPTIONS, "<modal>", {"image": "first"}),
    Case("caption done", S.CAPTIONING, Action.FINISH_CAPTIONS, "review", {}),
    Case("claim", S.READY, Action.CLAIM, "You claimed this job", {}, button="Claim"),
    Case("train config", S.CLAIMED, Action.CONFIGURE_TRAINING, "will train with",
         {"kind": "character"}),
    Case("train start", S.CLAIMED, Action.START_TRAINING, "is queued", {}),
    Case("train unclaim", S.CLAIMED, Action.UNCLAIM, "back on #job-board", {}),
    Case("train stop", S.TRAINING, Action.STOP_TRAINING, "Stopping", {}),
    Case("train retry", S.FAILED, Action.RETRY, "Back to CLAIMED", {}),
    Case("train retrain", S.TESTING, Action.RETRAIN, "Back to CLAIMED", {}),
    Case("vote", S.TESTING, Action.VOTE, "You voted", {}, button="Good"),
    Case("test prompts", S.TESTING, Action.REQUEST_SAMPLES, "Asked the workers",
         {"prompts": "ar1a, woman, beach"}),
    Case("lora release", S.TESTING, Action.RELEASE, "Released epoch 2", {"epoch": 2}),
    Case("lora cancel", S.CLAIMED, Action.CANCEL, "cancelled", {}),
    Case("lora iterate", S.RELEASED, Action.ITERATE, "as the next version", {}),
]  # fmt: skip


def expected_refusal(case: Case, role: str) -> str | None:
    """The policy's answer on permission alone (the states are prepared so that every
    other precondition holds): the refusal message, or None when allowed."""
    member_id = {"requester": 1, "claimer": 2}.get(role, 3)
    actor = Actor(member_id, frozenset(LAB_ROLES[r] for r in ROLE_OF[role]))
    facts = TicketFacts(state=case.state, requester_id=1, family=BaseFamily.SD15, claimer_id=2)
    decision = decide(case.action, actor, facts, _rules())
    if isinstance(decision, Refused) and decision.code is RefusalCode.NOT_PERMITTED:
        return decision.message
    return None


def _rules():
    from lab.settings import LabRules

    return LabRules()


def _first_image(lab, number: int) -> int:
    with lab.factory() as session:
        return session.scalar(
            select(DatasetImage.id)
            .join(Ticket, Ticket.id == DatasetImage.ticket_id)
            .where(Ticket.number == number, Ticket.guild_id == lab.guild.id)
            .order_by(DatasetImage.id)
        )


async def _prepare(lab, people, case: Case) -> tuple[int, dict[str, Any]]:
    number = ticket_in(lab, people, case.state)
    with lab.factory() as session:
        ticket_id = session.scalar(
            select(Ticket.id).where(Ticket.number == number, Ticket.guild_id == lab.guild.id)
        )
    if case.state is S.DATASET and case.command != "dataset upload":
        seed_images(lab, people["requester"], ticket_id)
    if case.action is Action.RELEASE:  # the vote quorum, so only permission decides
        sample = _sample(lab, ticket_id)
        for i in range(3):
            voter = who_of(lab, lab.member(f"voter{i}", "Tester"), LAB_ROLES["Tester"])
            cast_vote(lab.factory, voter, sample, 1, lab.bot.rules)
    await lab.relay()
    options = dict(case.options)
    if options.get("image") == "first":
        options["image"] = _first_image(lab, number)
    return number, options


def _sample(lab, ticket_id: int) -> int:
    from db.models import SampleSet

    with lab.factory() as session:
        return session.scalar(select(SampleSet.id).where(SampleSet.ticket_id == ticket_id))


async def _invoke(lab, member, case: Case, number: int, options: dict[str, Any]) -> Any:
    if case.button == "Claim":
        return await member.click(lab.channel("job-board").last_message, label="Claim")
    if case.button:
        return await member.click(lab.channel("testing").last_message, label=case.button)
    return await member.slash(lab.general, case.command, ticket=number, **options)


@pytest.mark.parametrize("case", CASES, ids=[c.command for c in CASES])
async def test_command_by_every_kind_of_member(tmp_path, template_db, case: Case):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        # A refusal changes nothing, so every refused member tries the same ticket; a
        # member who succeeds moved it, and the next one gets a freshly prepared one.
        order = sorted(people, key=lambda role: expected_refusal(case, role) is None)
        prepared: tuple[int, dict[str, Any]] | None = None
        for role in order:
            member = people[role]
            if prepared is None:
                prepared = await _prepare(lab, people, case)
            number, options = prepared
            result = await _invoke(lab, member, case, number, options)
            refusal = expected_refusal(case, role)
            if refusal is None:
                prepared = None
            assert result.acknowledged, (case.command, role)
            if refusal is not None:
                assert followup_text(result) == refusal, (case.command, role)
                assert result.ephemeral
            elif case.ok == "<modal>":
                assert result.modal is not None, (case.command, role, followup_text(result))
            else:
                assert case.ok in followup_text(result), (case.command, role)


async def test_spot_checks_of_the_matrix_in_plain_words(tmp_path, template_db):
    """The messages members actually read, written out (not derived from the policy)."""
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, S.REVIEW)
        tester_try = await people["tester"].slash(lab.general, "dataset approve", ticket=number)
        assert followup_text(tester_try) == (
            "Only a Lab Admin or the requester may approve the dataset."
        )
        number = ticket_in(lab, people, S.CLAIMED)
        other = await people["trainer"].slash(lab.general, "train start", ticket=number)
        assert followup_text(other) == (
            "Only a Lab Admin or the trainer who claimed it may start training."
        )
        wrong_state = await people["requester"].slash(lab.general, "dataset done", ticket=number)
        assert followup_text(wrong_state) == (
            "You can't finish the dataset while the ticket is CLAIMED."
        )


async def test_lab_setup_and_config_are_for_admins(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        # Discord hides /lab from members (tests/bot/test_commands.py); a server may
        # open it to everyone under Integrations, and then the bot still refuses.
        (lab_command,) = [c for c in await lab.bot.tree.fetch_commands() if c.name == "lab"]
        lab.guild.set_command_permissions(lab_command, {lab.guild.default_role: True})
        for role in ("nobody", "trainer", "tester"):
            refused = await people[role].slash(lab.general, "lab setup")
            assert "Only a Lab Admin" in followup_text(refused)
            refused = await people[role].slash(lab.general, "lab config", approval_only="trainer")
            assert followup_text(refused) == (
                "Only a Lab Admin may change the lab's configuration."
            )
        changed = await people["admin"].slash(lab.general, "lab config", approval_only="curator")
        assert followup_text(changed) == "Dataset Curator is now approval-only."
        asked = await people["nobody"].slash(lab.general, "role join", role="curator")
        assert "approval-only" in followup_text(asked)
        joined = await people["nobody"].slash(lab.general, "role join", role="tester")
        assert followup_text(joined) == "You are now a Tester."
        fetched = await lab.bot.get_guild(lab.guild.id).fetch_member(people["nobody"].id)
        assert "Tester" in [r.name for r in fetched.roles]
        left = await people["nobody"].slash(lab.general, "role leave", role="tester")
        assert followup_text(left) == "You left the Tester role."

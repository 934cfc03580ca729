"""The lifecycle policy, checked as a table over every state × action × role.

`SPEC` below is transcribed independently from docs/product.md ("Roles" and "Ticket
lifecycle"); the policy in lab/lifecycle.py must agree with it in every cell.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from lab.families import BaseFamily
from lab.lifecycle import (
    OPEN_STATES,
    RULES,
    Action,
    Actor,
    Allowed,
    LabRole,
    RefusalCode,
    Refused,
    TicketFacts,
    TicketState,
    decide,
    transitions_from,
)
from lab.settings import LabRules

S = TicketState
OPEN = set(OPEN_STATES)

# action: (states it may start from, state it leads to, who may do it)
SPEC: dict[Action, tuple[set[TicketState], TicketState | None, set[str]]] = {
    Action.FINISH_DATASET: ({S.DATASET}, S.CAPTIONING, {"admin", "requester", "curator"}),
    Action.FINISH_CAPTIONS: ({S.CAPTIONING}, S.REVIEW, {"admin", "requester", "captioner"}),
    Action.REQUEST_DATASET_CHANGES: ({S.REVIEW}, S.DATASET, {"admin", "requester"}),
    Action.REQUEST_CAPTION_CHANGES: ({S.REVIEW}, S.CAPTIONING, {"admin", "requester"}),
    Action.APPROVE: ({S.REVIEW}, S.READY, {"admin", "requester"}),
    Action.CLAIM: ({S.READY}, S.CLAIMED, {"admin", "trainer", "claimer"}),
    Action.UNCLAIM: ({S.CLAIMED}, S.READY, {"admin", "claimer", "system"}),
    Action.START_TRAINING: ({S.CLAIMED}, S.TRAINING, {"admin", "claimer"}),
    Action.STOP_TRAINING: ({S.TRAINING}, S.FAILED, {"admin", "claimer"}),
    Action.TRAINING_SUCCEEDED: ({S.TRAINING}, S.TESTING, {"system"}),
    Action.TRAINING_FAILED: ({S.TRAINING}, S.FAILED, {"system"}),
    Action.RETRY: ({S.FAILED}, S.CLAIMED, {"admin", "claimer"}),
    Action.RETRAIN: ({S.TESTING}, S.CLAIMED, {"admin", "claimer"}),
    Action.RELEASE: ({S.TESTING}, S.RELEASED, {"admin", "requester"}),
    Action.CANCEL: (OPEN, S.CANCELLED, {"admin", "requester"}),
    Action.REJECT: (OPEN, S.REJECTED, {"admin"}),
    Action.ITERATE: ({S.RELEASED}, None, {"admin", "requester"}),
    Action.EDIT_DATASET: ({S.DATASET}, None, {"admin", "requester", "curator"}),
    Action.EDIT_CAPTIONS: ({S.CAPTIONING}, None, {"admin", "requester", "captioner"}),
    Action.CONFIGURE_TRAINING: ({S.CLAIMED}, None, {"admin", "claimer"}),
    Action.VOTE: ({S.TESTING}, None, {"admin", "tester"}),
    Action.REQUEST_SAMPLES: ({S.TESTING}, None, {"admin", "tester", "claimer"}),
}

REQUESTER_ID, CLAIMER_ID = 1, 7

# The "claimer" is a Trainer who holds this job; the plain "trainer" does not.
ROLES: dict[str, Actor] = {
    "admin": Actor(2, frozenset({LabRole.ADMIN}), display_name="ada"),
    "requester": Actor(REQUESTER_ID, display_name="rita"),
    "curator": Actor(3, frozenset({LabRole.CURATOR})),
    "captioner": Actor(4, frozenset({LabRole.CAPTIONER})),
    "trainer": Actor(5, frozenset({LabRole.TRAINER})),
    "claimer": Actor(CLAIMER_ID, frozenset({LabRole.TRAINER}), display_name="tina"),
    "tester": Actor(6, frozenset({LabRole.TESTER})),
    "member": Actor(8),
    "system": Actor.system(),
}

RULES_ = LabRules()

# Facts under which every precondition holds, so only state and role decide.
GOOD = TicketFacts(
    state=S.DATASET,
    requester_id=REQUESTER_ID,
    family=BaseFamily.SD15,
    claimer_id=CLAIMER_ID,
    claimer_name="tina",
    image_count=30,
    trigger_word="ar1a",
    has_valid_training_config=True,
    chosen_epoch=3,
    saved_epochs=frozenset({1, 2, 3}),
    votes_up=4,
    votes_down=1,
)


def test_spec_covers_every_action():
    assert set(SPEC) == set(Action)


@pytest.mark.parametrize(
    ("state", "action", "role"),
    list(itertools.product(TicketState, Action, ROLES)),
    ids=lambda v: getattr(v, "value", v),
)
def test_policy_table(state: TicketState, action: Action, role: str):
    sources, target, who = SPEC[action]
    facts = replace(GOOD, state=state)
    decision = decide(action, ROLES[role], facts, RULES_, reason="because")

    if state not in sources:
        assert isinstance(decision, Refused)
        expected = (
            RefusalCode.ALREADY_CLAIMED
            if action is Action.CLAIM and state is S.CLAIMED
            else RefusalCode.WRONG_STATE
        )
        assert decision.code is expected
    elif role not in who:
        assert isinstance(decision, Refused)
        assert decision.code is RefusalCode.NOT_PERMITTED
        assert decision.message.startswith("Only ")
    else:
        assert decision == Allowed(target)


def test_every_state_is_reachable_from_dataset_and_terminal_states_have_no_exit():
    reachable, frontier = {S.DATASET}, [S.DATASET]
    while frontier:
        for nxt in transitions_from(frontier.pop()).values():
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(TicketState)
    for terminal in (S.RELEASED, S.CANCELLED, S.REJECTED):
        assert transitions_from(terminal) == {}


def test_back_edges_from_product_spec():
    assert transitions_from(S.REVIEW)[Action.REQUEST_DATASET_CHANGES] is S.DATASET
    assert transitions_from(S.REVIEW)[Action.REQUEST_CAPTION_CHANGES] is S.CAPTIONING
    assert transitions_from(S.TESTING)[Action.RETRAIN] is S.CLAIMED
    assert transitions_from(S.CLAIMED)[Action.UNCLAIM] is S.READY
    assert transitions_from(S.FAILED)[Action.RETRY] is S.CLAIMED


# --- preconditions: each one refuses with its own code and a helpful message ------


@pytest.mark.parametrize(
    ("family", "count", "allowed"),
    [(BaseFamily.SD15, 14, False), (BaseFamily.SD15, 15, True), (BaseFamily.SDXL, 11, False),
     (BaseFamily.SDXL, 12, True)],
)  # fmt: skip
def test_minimum_images_per_family(family, count, allowed):
    facts = replace(GOOD, family=family, image_count=count)
    decision = decide(Action.FINISH_DATASET, ROLES["requester"], facts, RULES_)
    assert decision.ok is allowed
    if not allowed:
        assert decision.code is RefusalCode.TOO_FEW_IMAGES
        assert f"this ticket has {count}" in decision.message
        assert "/dataset upload" in decision.message


def test_minimum_images_follow_the_labs_rules():
    rules = LabRules(min_images={BaseFamily.SD15: 40, BaseFamily.SDXL: 12})
    facts = replace(GOOD, image_count=30)
    assert decide(Action.FINISH_DATASET, ROLES["admin"], facts, rules).code is (
        RefusalCode.TOO_FEW_IMAGES
    )


def test_uncaptioned_images_block_review():
    facts = replace(GOOD, state=S.CAPTIONING, uncaptioned_count=3)
    decision = decide(Action.FINISH_CAPTIONS, ROLES["captioner"], facts, RULES_)
    assert decision.code is RefusalCode.CAPTIONS_MISSING
    assert decision.message.startswith("3 of 30 images have no caption")


def test_trigger_word_must_come_first():
    facts = replace(GOOD, state=S.REVIEW, missing_trigger_count=2)
    decision = decide(Action.APPROVE, ROLES["requester"], facts, RULES_)
    assert decision.code is RefusalCode.TRIGGER_NOT_FIRST
    assert "'ar1a'" in decision.message


def test_start_needs_a_valid_training_config():
    facts = replace(GOOD, state=S.CLAIMED, has_valid_training_config=False)
    decision = decide(Action.START_TRAINING, ROLES["claimer"], facts, RULES_)
    assert decision.code is RefusalCode.NO_TRAINING_CONFIG
    assert "/train config" in decision.message


def test_release_needs_epoch_then_quorum_and_only_admin_may_override_quorum():
    testing = replace(GOOD, state=S.TESTING)
    no_epoch = replace(testing, chosen_epoch=None)
    assert decide(Action.RELEASE, ROLES["requester"], no_epoch, RULES_).code is (
        RefusalCode.NO_EPOCH_CHOSEN
    )
    few_votes = replace(testing, votes_up=1, votes_down=0)
    assert decide(Action.RELEASE, ROLES["requester"], few_votes, RULES_).code is (
        RefusalCode.NO_QUORUM
    )
    assert (
        decide(Action.RELEASE, ROLES["requester"], few_votes, RULES_, admin_override=True).code
        is RefusalCode.NO_QUORUM
    )
    assert decide(Action.RELEASE, ROLES["admin"], few_votes, RULES_, admin_override=True).ok
    # the override skips the quorum only, never the choice of an epoch
    no_epoch_few = replace(few_votes, chosen_epoch=None)
    assert (
        decide(Action.RELEASE, ROLES["admin"], no_epoch_few, RULES_, admin_override=True).code
        is RefusalCode.NO_EPOCH_CHOSEN
    )


@pytest.mark.parametrize(("up", "down", "ok"), [(2, 1, True), (2, 2, False), (1, 2, False)])
def test_quorum_needs_more_than_the_approval_share(up, down, ok):
    facts = replace(GOOD, state=S.TESTING, votes_up=up, votes_down=down)
    assert decide(Action.RELEASE, ROLES["requester"], facts, RULES_).ok is ok


@pytest.mark.parametrize("action", [a for a, r in RULES.items() if r.needs_reason])
def test_actions_that_need_a_reason_refuse_a_blank_one(action):
    sources, _, who = SPEC[action]
    role = "admin" if "admin" in who else "system"
    facts = replace(GOOD, state=next(iter(sources)))
    decision = decide(action, ROLES[role], facts, RULES_, reason="   ")
    assert decision.code is RefusalCode.REASON_REQUIRED


def test_claiming_a_claimed_job_names_the_claimer():
    facts = replace(GOOD, state=S.CLAIMED)
    decision = decide(Action.CLAIM, ROLES["trainer"], facts, RULES_)
    assert decision.message == "This job was already claimed by tina."


def test_docs_rule_table_matches_the_policy():
    from pathlib import Path

    from lab.lifecycle import policy_table_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md").read_text()
    assert doc.endswith(policy_table_markdown())

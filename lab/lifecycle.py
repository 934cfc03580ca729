"""The ticket lifecycle and who may move a ticket along it (pure; no I/O).

```
DATASET → CAPTIONING → REVIEW → READY → CLAIMED → TRAINING → TESTING → RELEASED
```
Exits: CANCELLED (requester/admin), REJECTED (admin), FAILED from TRAINING (the
claimer may retry → CLAIMED). Back-edges: REVIEW → DATASET/CAPTIONING (changes
requested, with a reason), TESTING → CLAIMED (retrain), CLAIMED → READY (unclaim,
or automatic after inactivity). RELEASED → ``ITERATE`` opens version N+1.

`decide` is the single place that answers "may this actor do this action on this
ticket now?": it returns `Allowed` (with the state to move to, if any) or `Refused`
with a typed reason and a message that tells the member why and what to do next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from lab.families import BaseFamily
from lab.settings import LabRules


class TicketState(StrEnum):
    DATASET = "dataset"
    CAPTIONING = "captioning"
    REVIEW = "review"
    READY = "ready"
    CLAIMED = "claimed"
    TRAINING = "training"
    TESTING = "testing"
    RELEASED = "released"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    FAILED = "failed"


TERMINAL_STATES = frozenset({TicketState.RELEASED, TicketState.CANCELLED, TicketState.REJECTED})
OPEN_STATES = frozenset(TicketState) - TERMINAL_STATES


class LabRole(StrEnum):
    """Discord roles the bot creates. Requester and claimer are relations, not roles."""

    ADMIN = "admin"
    CURATOR = "curator"
    CAPTIONER = "captioner"
    TRAINER = "trainer"
    TESTER = "tester"


class Relation(StrEnum):
    """Who may act, as written in a rule: a role, or a relation to this ticket."""

    ADMIN = "admin"
    REQUESTER = "requester"
    CURATOR = "curator"
    CAPTIONER = "captioner"
    TRAINER = "trainer"
    CLAIMER = "claimer"
    TESTER = "tester"
    SYSTEM = "system"
    """The lab itself: workers, the reaper, the inactivity timer."""


class Action(StrEnum):
    # Transitions.
    FINISH_DATASET = "finish_dataset"
    FINISH_CAPTIONS = "finish_captions"
    REQUEST_DATASET_CHANGES = "request_dataset_changes"
    REQUEST_CAPTION_CHANGES = "request_caption_changes"
    APPROVE = "approve"
    CLAIM = "claim"
    UNCLAIM = "unclaim"
    START_TRAINING = "start_training"
    STOP_TRAINING = "stop_training"
    TRAINING_SUCCEEDED = "training_succeeded"
    TRAINING_FAILED = "training_failed"
    RETRY = "retry"
    RETRAIN = "retrain"
    RELEASE = "release"
    CANCEL = "cancel"
    REJECT = "reject"
    ITERATE = "iterate"
    # Work inside a state (no state change).
    EDIT_DATASET = "edit_dataset"
    EDIT_CAPTIONS = "edit_captions"
    CONFIGURE_TRAINING = "configure_training"
    VOTE = "vote"
    REQUEST_SAMPLES = "request_samples"


class RefusalCode(StrEnum):
    WRONG_STATE = "wrong_state"
    NOT_PERMITTED = "not_permitted"
    TOO_FEW_IMAGES = "too_few_images"
    CAPTIONS_MISSING = "captions_missing"
    TRIGGER_NOT_FIRST = "trigger_not_first"
    NO_TRAINING_CONFIG = "no_training_config"
    NO_EPOCH_CHOSEN = "no_epoch_chosen"
    NO_QUORUM = "no_quorum"
    REASON_REQUIRED = "reason_required"
    ALREADY_CLAIMED = "already_claimed"
    CHANGED_MEANWHILE = "changed_meanwhile"


@dataclass(frozen=True, slots=True)
class Actor:
    """A member (or the lab itself) as the policy sees them."""

    member_id: int | None
    roles: frozenset[LabRole] = frozenset()
    is_system: bool = False
    display_name: str = ""

    @classmethod
    def system(cls) -> Actor:
        return cls(member_id=None, is_system=True, display_name="LoRA Lab")


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What the policy needs to know about a ticket; the database layer fills it in."""

    state: TicketState
    requester_id: int
    family: BaseFamily
    claimer_id: int | None = None
    claimer_name: str = ""
    image_count: int = 0
    uncaptioned_count: int = 0
    missing_trigger_count: int = 0
    trigger_word: str = ""
    has_valid_training_config: bool = False
    chosen_epoch: int | None = None
    saved_epochs: frozenset[int] = frozenset()
    """Epochs of the latest run that have a LoRA file."""
    votes_up: int = 0
    votes_down: int = 0


@dataclass(frozen=True, slots=True)
class Allowed:
    target: TicketState | None
    """The state to move to; ``None`` for work inside the current state."""

    ok: bool = field(default=True, init=False)


@dataclass(frozen=True, slots=True)
class Refused:
    code: RefusalCode
    message: str

    ok: bool = field(default=False, init=False)


Decision = Allowed | Refused
Precondition = Callable[[TicketFacts, LabRules], "Refused | None"]


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    sources: frozenset[TicketState]
    target: TicketState | None
    who: frozenset[Relation]
    preconditions: tuple[Precondition, ...] = ()
    needs_reason: bool = False
    verb: str = ""
    """How the refusal messages name the action ("finish the dataset")."""


# --- preconditions ---------------------------------------------------------------


def _enough_images(facts: TicketFacts, rules: LabRules) -> Refused | None:
    need = rules.min_images[facts.family]
    if facts.image_count >= need:
        return None
    return Refused(
        RefusalCode.TOO_FEW_IMAGES,
        f"A {facts.family.value} LoRA needs at least {need} images; this ticket has "
        f"{facts.image_count}. Upload {need - facts.image_count} more with /dataset upload.",
    )


def _captions_complete(facts: TicketFacts, rules: LabRules) -> Refused | None:
    if facts.image_count == 0 or facts.uncaptioned_count:
        return Refused(
            RefusalCode.CAPTIONS_MISSING,
            f"{facts.uncaptioned_count} of {facts.image_count} images have no caption yet. "
            "Caption them with /caption edit, /caption upload or /caption auto.",
        )
    if facts.missing_trigger_count:
        return Refused(
            RefusalCode.TRIGGER_NOT_FIRST,
            f"{facts.missing_trigger_count} captions do not start with the trigger word "
            f"'{facts.trigger_word}'. Fix them with /caption bulk add tag:{facts.trigger_word}.",
        )
    return None


def _training_config(facts: TicketFacts, rules: LabRules) -> Refused | None:
    if facts.has_valid_training_config:
        return None
    return Refused(
        RefusalCode.NO_TRAINING_CONFIG,
        "This job has no valid training configuration yet. Set one with /train config.",
    )


def _epoch_chosen(facts: TicketFacts, rules: LabRules) -> Refused | None:
    if facts.chosen_epoch is None:
        return Refused(
            RefusalCode.NO_EPOCH_CHOSEN,
            "Choose the epoch to release: /lora release epoch:<n>.",
        )
    if facts.chosen_epoch in facts.saved_epochs:
        return None
    saved = ", ".join(str(e) for e in sorted(facts.saved_epochs)) or "none yet"
    return Refused(
        RefusalCode.NO_EPOCH_CHOSEN,
        f"Epoch {facts.chosen_epoch} has no LoRA file in this run (saved epochs: {saved}).",
    )


def quorum_reached(facts: TicketFacts, rules: LabRules) -> bool:
    """Enough votes were cast and strictly more than the required share approve."""
    cast = facts.votes_up + facts.votes_down
    if cast < rules.release_quorum:
        return False
    return cast == 0 or facts.votes_up / cast > rules.release_min_approval


def _quorum(facts: TicketFacts, rules: LabRules) -> Refused | None:
    if quorum_reached(facts, rules):
        return None
    cast = facts.votes_up + facts.votes_down
    return Refused(
        RefusalCode.NO_QUORUM,
        f"Testers have cast {cast} votes ({facts.votes_up} up); a release needs at least "
        f"{rules.release_quorum} with more than {rules.release_min_approval:.0%} up, "
        "or a Lab Admin's override.",
    )


# --- the table ----------------------------------------------------------------

S = TicketState
R = Relation
_OPEN_NOT_TRAINING = frozenset(OPEN_STATES - {S.TRAINING})

RULES: dict[Action, Rule] = {
    rule.action: rule
    for rule in (
        Rule(Action.FINISH_DATASET, frozenset({S.DATASET}), S.CAPTIONING,
             frozenset({R.ADMIN, R.REQUESTER, R.CURATOR}), (_enough_images,),
             verb="finish the dataset"),
        Rule(Action.FINISH_CAPTIONS, frozenset({S.CAPTIONING}), S.REVIEW,
             frozenset({R.ADMIN, R.REQUESTER, R.CAPTIONER}), (_enough_images, _captions_complete),
             verb="finish captioning"),
        Rule(Action.REQUEST_DATASET_CHANGES, frozenset({S.REVIEW}), S.DATASET,
             frozenset({R.ADMIN, R.REQUESTER}), needs_reason=True,
             verb="request dataset changes"),
        Rule(Action.REQUEST_CAPTION_CHANGES, frozenset({S.REVIEW}), S.CAPTIONING,
             frozenset({R.ADMIN, R.REQUESTER}), needs_reason=True,
             verb="request caption changes"),
        Rule(Action.APPROVE, frozenset({S.REVIEW}), S.READY,
             frozenset({R.ADMIN, R.REQUESTER}), (_enough_images, _captions_complete),
             verb="approve the dataset"),
        Rule(Action.CLAIM, frozenset({S.READY}), S.CLAIMED,
             frozenset({R.ADMIN, R.TRAINER}), verb="claim this job"),
        Rule(Action.UNCLAIM, frozenset({S.CLAIMED}), S.READY,
             frozenset({R.ADMIN, R.CLAIMER, R.SYSTEM}), verb="unclaim this job"),
        Rule(Action.START_TRAINING, frozenset({S.CLAIMED}), S.TRAINING,
             frozenset({R.ADMIN, R.CLAIMER}), (_training_config,), verb="start training"),
        Rule(Action.STOP_TRAINING, frozenset({S.TRAINING}), S.FAILED,
             frozenset({R.ADMIN, R.CLAIMER}), verb="stop training"),
        Rule(Action.TRAINING_SUCCEEDED, frozenset({S.TRAINING}), S.TESTING,
             frozenset({R.SYSTEM}), verb="finish training"),
        Rule(Action.TRAINING_FAILED, frozenset({S.TRAINING}), S.FAILED,
             frozenset({R.SYSTEM}), needs_reason=True, verb="fail training"),
        Rule(Action.RETRY, frozenset({S.FAILED}), S.CLAIMED,
             frozenset({R.ADMIN, R.CLAIMER}), verb="retry training"),
        Rule(Action.RETRAIN, frozenset({S.TESTING}), S.CLAIMED,
             frozenset({R.ADMIN, R.CLAIMER}), verb="retrain with new parameters"),
        Rule(Action.RELEASE, frozenset({S.TESTING}), S.RELEASED,
             frozenset({R.ADMIN, R.REQUESTER}), (_epoch_chosen, _quorum),
             verb="release this LoRA"),
        Rule(Action.CANCEL, frozenset(OPEN_STATES), S.CANCELLED,
             frozenset({R.ADMIN, R.REQUESTER}), verb="cancel this ticket"),
        Rule(Action.REJECT, frozenset(OPEN_STATES), S.REJECTED,
             frozenset({R.ADMIN}), needs_reason=True, verb="reject this ticket"),
        Rule(Action.ITERATE, frozenset({S.RELEASED}), None,
             frozenset({R.ADMIN, R.REQUESTER}), verb="open the next version"),
        Rule(Action.EDIT_DATASET, frozenset({S.DATASET}), None,
             frozenset({R.ADMIN, R.REQUESTER, R.CURATOR}), verb="change the dataset"),
        Rule(Action.EDIT_CAPTIONS, frozenset({S.CAPTIONING}), None,
             frozenset({R.ADMIN, R.REQUESTER, R.CAPTIONER}), verb="edit captions"),
        Rule(Action.CONFIGURE_TRAINING, frozenset({S.CLAIMED}), None,
             frozenset({R.ADMIN, R.CLAIMER}), verb="configure training"),
        Rule(Action.VOTE, frozenset({S.TESTING}), None,
             frozenset({R.ADMIN, R.TESTER}), verb="vote on samples"),
        Rule(Action.REQUEST_SAMPLES, frozenset({S.TESTING}), None,
             frozenset({R.ADMIN, R.TESTER, R.CLAIMER}), verb="request test samples"),
    )
}  # fmt: skip

# What an admin may skip: the vote quorum (the "admin override" of product.md).
ADMIN_OVERRIDABLE = frozenset({_quorum})

_ROLE_RELATION = {
    LabRole.ADMIN: R.ADMIN,
    LabRole.CURATOR: R.CURATOR,
    LabRole.CAPTIONER: R.CAPTIONER,
    LabRole.TRAINER: R.TRAINER,
    LabRole.TESTER: R.TESTER,
}


def relations(actor: Actor, facts: TicketFacts) -> frozenset[Relation]:
    """Every relation the actor has to this ticket (roles, requester, claimer, system)."""
    if actor.is_system:
        return frozenset({R.SYSTEM})
    found = {_ROLE_RELATION[role] for role in actor.roles}
    if actor.member_id is not None and actor.member_id == facts.requester_id:
        found.add(R.REQUESTER)
    if actor.member_id is not None and actor.member_id == facts.claimer_id:
        found.add(R.CLAIMER)
    return frozenset(found)


def _who_text(who: frozenset[Relation]) -> str:
    names = {
        R.ADMIN: "a Lab Admin",
        R.REQUESTER: "the requester",
        R.CURATOR: "a Dataset Curator",
        R.CAPTIONER: "a Captioner",
        R.TRAINER: "a Trainer",
        R.CLAIMER: "the trainer who claimed it",
        R.TESTER: "a Tester",
        R.SYSTEM: "the lab itself",
    }
    ordered = [names[r] for r in Relation if r in who]
    return ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " or " + ordered[-1]


def decide(
    action: Action,
    actor: Actor,
    facts: TicketFacts,
    rules: LabRules,
    *,
    reason: str | None = None,
    admin_override: bool = False,
) -> Decision:
    """May `actor` do `action` on a ticket described by `facts`? Pure and total."""
    rule = RULES[action]
    if facts.state not in rule.sources:
        if action is Action.CLAIM and facts.state is S.CLAIMED:
            by = facts.claimer_name or "another trainer"
            return Refused(RefusalCode.ALREADY_CLAIMED, f"This job was already claimed by {by}.")
        return Refused(
            RefusalCode.WRONG_STATE,
            f"You can't {rule.verb} while the ticket is {facts.state.value.upper()}.",
        )
    mine = relations(actor, facts)
    if not mine & rule.who:
        return Refused(
            RefusalCode.NOT_PERMITTED,
            f"Only {_who_text(rule.who)} may {rule.verb}.",
        )
    if rule.needs_reason and not (reason and reason.strip()):
        return Refused(RefusalCode.REASON_REQUIRED, f"Say why you {rule.verb} (a reason).")
    overriding = admin_override and R.ADMIN in mine
    for check in rule.preconditions:
        if overriding and check in ADMIN_OVERRIDABLE:
            continue
        refused = check(facts, rules)
        if refused is not None:
            return refused
    return Allowed(rule.target)


def transitions_from(state: TicketState) -> dict[Action, TicketState]:
    """The edges of the state graph that leave `state`."""
    return {a: r.target for a, r in RULES.items() if state in r.sources and r.target is not None}


def policy_table_markdown() -> str:
    """The rule table as Markdown (docs/lifecycle.md embeds it; a test keeps it current)."""
    checks = {
        _enough_images: "minimum images for the base family",
        _captions_complete: "every image captioned, trigger word first",
        _training_config: "a valid training config",
        _epoch_chosen: "a saved epoch chosen",
        _quorum: "vote quorum (a Lab Admin may override)",
    }
    lines = ["| action | from | to | who | must hold |", "|---|---|---|---|---|"]
    for rule in RULES.values():
        sources = ", ".join(s.value.upper() for s in TicketState if s in rule.sources)
        if rule.sources == OPEN_STATES:
            sources = "any open state"
        target = rule.target.value.upper() if rule.target else "(no change)"
        who = ", ".join(r.value for r in Relation if r in rule.who)
        must = [checks[c] for c in rule.preconditions]
        if rule.needs_reason:
            must.append("a reason")
        lines.append(
            f"| {rule.action.value} | {sources} | {target} | {who} | {'; '.join(must) or '—'} |"
        )
    return "\n".join(lines) + "\n"

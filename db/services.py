"""Services: each call is one transaction that decides, writes, and records what must
follow (outbox rows). Nothing leaves the process before the commit."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.base import utcnow
from db.effects import TransitionContext, TransitionResult, run_effects
from db.models import ContributionKind, Member, SubjectKind, Ticket
from lab.errors import LabError
from lab.families import family_of
from lab.lifecycle import (
    Action,
    Actor,
    Allowed,
    RefusalCode,
    Refused,
    TicketFacts,
    TicketState,
    decide,
)
from lab.prompts import check_class_token, check_trigger_word
from lab.settings import LabRules
from lab.tasks import OutboxKind


class DbError(LabError):
    """Base error of the database layer."""

    code = "db_error"


class NotFound(DbError):
    code = "not_found"


class TransitionRefused(DbError):
    """The policy (or a concurrent change) refused the action; `refusal` says why."""

    def __init__(self, refusal: Refused) -> None:
        super().__init__(refusal.message, code=refusal.code.value)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class NewTicket:
    name: str
    kind: SubjectKind
    base_model: str
    trigger_word: str
    class_token: str
    description: str = ""


def open_ticket(
    session: Session,
    guild_id: int,
    requester: Member,
    new: NewTicket,
    *,
    parent: Ticket | None = None,
) -> Ticket:
    """Create ticket #N (N unique per guild) in DATASET, with its audit row and the
    forum post to create. Runs inside the caller's transaction."""
    try:
        family = family_of(new.base_model)
    except KeyError:
        raise DbError(
            f"Unknown base model '{new.base_model}'. Use sd15, sdxl, pony or illustrious.",
            code="unknown_base",
        ) from None
    # Checked here, for every way in (modal, CLI, versions): both end up in the
    # worker's prompt files, where `--w 16384` would size a GPU render.
    trigger_word = check_trigger_word(new.trigger_word)
    class_token = check_class_token(new.class_token)
    ticket = Ticket(
        guild_id=guild_id,
        number=repo.allocate_ticket_number(session, guild_id),
        name=new.name,
        kind=new.kind,
        base_family=family,
        base_model=new.base_model.lower(),
        trigger_word=trigger_word,
        class_token=class_token,
        description=new.description,
        requester_id=requester.id,
        parent_id=parent.id if parent else None,
        version=parent.version + 1 if parent else 1,
    )
    session.add(ticket)
    session.flush()
    repo.add_audit(
        session,
        ticket.id,
        actor_id=requester.id,
        action="open",
        from_status=TicketState.DATASET,
        to_status=TicketState.DATASET,
    )
    repo.record_contribution(session, ticket.id, requester.id, ContributionKind.REQUEST)
    repo.add_outbox(
        session,
        repo.OutboxItem(
            kind=OutboxKind.TICKET_POST.value,
            payload={"ticket_id": ticket.id},
            idempotency_key=f"ticket-post:{ticket.id}",
        ),
    )
    return ticket


def transition(
    factory: sessionmaker[Session],
    ticket_id: int,
    action: Action,
    actor: Actor,
    rules: LabRules,
    *,
    reason: str | None = None,
    admin_override: bool = False,
) -> TransitionResult:
    """Decide and apply `action` in one transaction of its own (see `apply_transition`)."""
    with factory.begin() as session:
        return apply_transition(
            session, ticket_id, action, actor, rules, reason=reason, admin_override=admin_override
        )


def apply_transition(
    session: Session,
    ticket_id: int,
    action: Action,
    actor: Actor,
    rules: LabRules,
    *,
    reason: str | None = None,
    admin_override: bool = False,
) -> TransitionResult:
    """Decide and apply `action` inside the caller's transaction: a compare-and-set on
    the ticket, an audit row, then every consequence from `db.effects` (jobs, card,
    job board, release post, notices), the same whoever acts.

    Raises `TransitionRefused` with the policy's reason, or with
    ``already_claimed``/``changed_meanwhile`` when another member moved the ticket
    between our read and our write.
    """
    ticket = get_ticket(session, ticket_id)
    facts = repo.ticket_facts(session, ticket, count_own_votes=rules.count_own_votes)
    decision = _decide(action, actor, facts, rules, reason=reason, admin_override=admin_override)
    before = TransitionResult(
        ticket.id, ticket.number, ticket.status, decision.target, ticket.revision
    )
    if decision.target is None:
        return before
    won = repo.compare_and_set_status(
        session,
        ticket.id,
        expected=ticket.status,
        expected_revision=ticket.revision,
        new=decision.target,
        **_side_values(action, actor),
    )
    if not won:
        raise TransitionRefused(_lost_race(session, ticket_id, action))
    repo.add_audit(
        session,
        ticket.id,
        actor_id=actor.member_id,
        action=action.value,
        from_status=ticket.status,
        to_status=decision.target,
        reason=reason,
    )
    result = TransitionResult(
        ticket.id, ticket.number, before.from_state, decision.target, ticket.revision + 1
    )
    session.refresh(ticket)  # the compare-and-set wrote past the ORM: effects see the new row
    run_effects(
        TransitionContext(session, ticket, action, actor, result, facts, rules, reason=reason)
    )
    return result


def get_ticket(session: Session, ticket_id: int) -> Ticket:
    """The ticket, or `NotFound`."""
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"Ticket {ticket_id} does not exist.")
    return ticket


def require(
    session: Session, ticket: Ticket, action: Action, actor: Actor, rules: LabRules
) -> None:
    """Raise `TransitionRefused` unless the policy allows `action` now: the one check of
    "may this actor do this" for work inside a state (uploads, captions, votes,
    configuring); transitions ask the same policy through `apply_transition`."""
    facts = repo.ticket_facts(session, ticket, count_own_votes=rules.count_own_votes)
    _decide(action, actor, facts, rules)


def _decide(
    action: Action,
    actor: Actor,
    facts: TicketFacts,
    rules: LabRules,
    *,
    reason: str | None = None,
    admin_override: bool = False,
) -> Allowed:
    decision = decide(action, actor, facts, rules, reason=reason, admin_override=admin_override)
    if isinstance(decision, Refused):
        raise TransitionRefused(decision)
    return decision


def _side_values(action: Action, actor: Actor) -> dict[str, object]:
    """Columns that change with the status for particular actions."""
    if action is Action.CLAIM:
        return {"claimer_id": actor.member_id, "claimed_at": utcnow()}
    if action is Action.UNCLAIM:
        return {"claimer_id": None, "claimed_at": None}
    return {}


def _lost_race(session: Session, ticket_id: int, action: Action) -> Refused:
    """Explain a compare-and-set that matched no row: someone else moved first."""
    session.expire_all()
    ticket = session.get(Ticket, ticket_id)
    assert ticket is not None
    if action is Action.CLAIM and ticket.claimer_id is not None:
        name = session.scalar(select(Member.display_name).where(Member.id == ticket.claimer_id))
        return Refused(RefusalCode.ALREADY_CLAIMED, f"This job was already claimed by {name}.")
    return Refused(
        RefusalCode.CHANGED_MEANWHILE,
        f"Someone changed this ticket a moment ago (it is now {ticket.status.value.upper()}). "
        "Check /lora status and try again.",
    )

"""Services: each call is one transaction that decides, writes, and records what must
follow (outbox rows). Nothing leaves the process before the commit."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.base import utcnow
from db.effects import EFFECTS
from db.models import ContributionKind, Member, SubjectKind, Ticket
from lab.errors import LabError
from lab.families import family_of
from lab.lifecycle import (
    Action,
    Actor,
    Allowed,
    RefusalCode,
    Refused,
    TicketState,
    decide,
)
from lab.settings import LabRules


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
class TransitionResult:
    ticket_id: int
    number: int
    from_state: TicketState
    to_state: TicketState | None


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
    ticket = Ticket(
        guild_id=guild_id,
        number=repo.allocate_ticket_number(session, guild_id),
        name=new.name,
        kind=new.kind,
        base_family=family,
        base_model=new.base_model.lower(),
        trigger_word=new.trigger_word.strip(),
        class_token=new.class_token.strip(),
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
            kind="discord.ticket_post",
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
    the ticket, an audit row, the card refresh and the action's own effects (outbox).

    Raises `TransitionRefused` with the policy's reason, or with
    ``already_claimed``/``changed_meanwhile`` when another member moved the ticket
    between our read and our write.
    """
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"Ticket {ticket_id} does not exist.")
    facts = repo.ticket_facts(session, ticket)
    decision = decide(action, actor, facts, rules, reason=reason, admin_override=admin_override)
    if isinstance(decision, Refused):
        raise TransitionRefused(decision)
    assert isinstance(decision, Allowed)
    result = TransitionResult(ticket.id, ticket.number, ticket.status, decision.target)
    if decision.target is None:
        return result
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
    repo.queue_card_refresh(session, ticket.id, f"{ticket.id}:{ticket.revision + 1}")
    effect = EFFECTS.get(action)
    if effect is not None:
        effect(session, ticket.id, actor)
    return result


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

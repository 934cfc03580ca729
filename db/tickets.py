"""Ticket services for the bot: who is acting, opening a request, reading a ticket card,
and the transitions members trigger from Discord. Each public function is one
transaction (``factory.begin()``); the bot runs them in a worker thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db import repositories as repo
from db.limits import check_open_tickets
from db.models import (
    Contribution,
    DatasetImage,
    Guild,
    ImageStatus,
    Member,
    Ticket,
)
from db.refs import TicketKey, TicketRef, ticket_id_in
from db.services import DbError, NewTicket, NotFound, apply_transition, open_ticket
from lab.lifecycle import Action, Actor, LabRole, TicketState
from lab.settings import LabRules

Factory = sessionmaker[Session]


@dataclass(frozen=True, slots=True)
class Who:
    """A Discord member as the bot saw them on an interaction."""

    guild_id: int
    user_id: int
    name: str
    roles: frozenset[LabRole] = frozenset()
    guild_name: str = ""


def actor_in(session: Session, who: Who) -> Actor:
    """The policy's actor for `who`, creating their guild and member rows on first sight."""
    repo.get_or_create_guild(session, who.guild_id, who.guild_name or str(who.guild_id))
    member = repo.get_or_create_member(session, who.guild_id, who.user_id, who.name)
    return Actor(member_id=member.id, roles=who.roles, display_name=who.name)


# --- the guild ---------------------------------------------------------------------


def guild_config(factory: Factory, guild_id: int) -> dict[str, Any]:
    """The lab's configuration (channel, role and tag ids) or ``{}`` before setup."""
    with factory() as session:
        guild = session.get(Guild, guild_id)
        return dict(guild.config or {}) if guild else {}


def save_guild_config(factory: Factory, guild_id: int, name: str, config: dict[str, Any]) -> None:
    with factory.begin() as session:
        guild = repo.get_or_create_guild(session, guild_id, name)
        guild.config = {**(guild.config or {}), **config}


# --- finding tickets -----------------------------------------------------------------


def locate_ticket(
    factory: Factory, guild_id: int, *, channel_id: int | None = None, number: int | None = None
) -> int:
    """The id of ticket #`number`, or of the ticket whose forum post is `channel_id`."""
    with factory() as session:
        return ticket_id_in(session, TicketRef(guild_id, number=number, thread_id=channel_id))


# --- the card ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketCard:
    """Everything the ticket card, the job board and the status reply show."""

    id: int
    guild_id: int
    number: int
    version: int
    name: str
    kind: str
    base_model: str
    family: str
    trigger_word: str
    class_token: str
    description: str
    status: TicketState
    requester: str
    requester_user_id: int
    claimer: str | None
    claimer_user_id: int | None
    image_count: int
    captioned_count: int
    votes_up: int
    votes_down: int
    chosen_epoch: int | None
    forum_thread_id: int | None
    card_message_id: int | None
    board_message_id: int | None
    release_message_id: int | None
    job_id: int | None
    people: dict[str, list[str]] = field(default_factory=dict)


def _card(session: Session, ticket: Ticket) -> TicketCard:
    requester = session.get(Member, ticket.requester_id)
    claimer = session.get(Member, ticket.claimer_id) if ticket.claimer_id else None
    images = session.scalar(
        select(func.count())
        .select_from(DatasetImage)
        .where(DatasetImage.ticket_id == ticket.id, DatasetImage.status == ImageStatus.ACTIVE)
    )
    captions = repo.current_captions(session, ticket.id)
    up, down = repo.vote_tally(session, ticket)
    job = repo.latest_job(session, ticket.id)
    people: dict[str, list[str]] = {}
    rows = session.execute(
        select(Contribution.kind, Member.display_name)
        .join(Member, Member.id == Contribution.member_id)
        .where(Contribution.ticket_id == ticket.id)
        .order_by(Contribution.id)
    )
    for kind, name in rows:
        people.setdefault(kind.value, []).append(name)
    assert requester is not None
    return TicketCard(
        id=ticket.id,
        guild_id=ticket.guild_id,
        number=ticket.number,
        version=ticket.version,
        name=ticket.name,
        kind=ticket.kind.value,
        base_model=ticket.base_model,
        family=ticket.base_family.value,
        trigger_word=ticket.trigger_word,
        class_token=ticket.class_token,
        description=ticket.description,
        status=ticket.status,
        requester=requester.display_name,
        requester_user_id=requester.discord_user_id,
        claimer=claimer.display_name if claimer else None,
        claimer_user_id=claimer.discord_user_id if claimer else None,
        image_count=images or 0,
        captioned_count=sum(1 for text in captions.values() if text.strip()),
        votes_up=up,
        votes_down=down,
        chosen_epoch=ticket.chosen_epoch,
        forum_thread_id=ticket.forum_thread_id,
        card_message_id=ticket.card_message_id,
        board_message_id=ticket.board_message_id,
        release_message_id=ticket.release_message_id,
        job_id=job.id if job else None,
        people=people,
    )


def ticket_card(factory: Factory, ticket_id: TicketKey) -> TicketCard:
    with factory() as session:
        ticket = session.get(Ticket, ticket_id_in(session, ticket_id))
        if ticket is None:
            raise NotFound(f"Ticket {ticket_id} does not exist.")
        return _card(session, ticket)


def list_tickets(
    factory: Factory,
    guild_id: int,
    *,
    status: TicketState | None = None,
    requester_user_id: int | None = None,
    limit: int = 25,
) -> list[TicketCard]:
    """Tickets of the guild, newest first, optionally one status or one requester's."""
    with factory() as session:
        query = select(Ticket).where(Ticket.guild_id == guild_id)
        if status is not None:
            query = query.where(Ticket.status == status)
        if requester_user_id is not None:
            query = query.join(Member, Member.id == Ticket.requester_id).where(
                Member.discord_user_id == requester_user_id
            )
        tickets = session.scalars(query.order_by(Ticket.number.desc()).limit(limit)).all()
        return [_card(session, t) for t in tickets]


def record_messages(factory: Factory, ticket_id: int, **message_ids: int | None) -> None:
    """Remember where the ticket's post, card, board or release message lives."""
    allowed = {"forum_thread_id", "card_message_id", "board_message_id", "release_message_id"}
    if not set(message_ids) <= allowed:
        raise ValueError(f"unknown message columns: {set(message_ids) - allowed}")
    with factory.begin() as session:
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            raise NotFound(f"Ticket {ticket_id} does not exist.")
        for key, value in message_ids.items():
            setattr(ticket, key, value)


# --- member actions ------------------------------------------------------------------


def request_ticket(factory: Factory, who: Who, new: NewTicket) -> tuple[int, int]:
    """Open a request; returns (ticket id, number). The forum post follows via the outbox."""
    with factory.begin() as session:
        actor = actor_in(session, who)
        requester = session.get(Member, actor.member_id)
        assert requester is not None
        check_open_tickets(session, who.guild_id, requester.id)
        ticket = open_ticket(session, who.guild_id, requester, new)
        return ticket.id, ticket.number


def act(
    factory: Factory,
    who: Who,
    ticket_id: TicketKey,
    action: Action,
    rules: LabRules,
    *,
    reason: str | None = None,
    admin_override: bool = False,
    epoch: int | None = None,
) -> TicketState | None:
    """A member moves a ticket (decided by the lifecycle policy, compare-and-set, its
    consequences from `db.effects`); returns the new state. Raises `TransitionRefused`
    with the policy's message. `epoch` (RELEASE) is the epoch to ship, recorded in the
    same transaction: a refused release rolls it back with everything else."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        if epoch is not None:
            _choose_epoch(session, ticket_id, epoch)
        actor = actor_in(session, who)
        result = apply_transition(
            session, ticket_id, action, actor, rules, reason=reason, admin_override=admin_override
        )
        return result.to_state


def _choose_epoch(session: Session, ticket_id: int, epoch: int) -> None:
    if epoch < 1:
        raise DbError("Epochs are numbered from 1.", code="bad_epoch")
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"Ticket {ticket_id} does not exist.")
    ticket.chosen_epoch = epoch


def choose_epoch(factory: Factory, ticket_id: TicketKey, epoch: int) -> None:
    """Record the epoch a release will ship (checked against the policy by RELEASE)."""
    with factory.begin() as session:
        _choose_epoch(session, ticket_id_in(session, ticket_id), epoch)


def iterate(factory: Factory, who: Who, ticket_id: TicketKey, rules: LabRules) -> tuple[int, int]:
    """Open version N+1 of a released ticket, starting from the same dataset."""
    with factory.begin() as session:
        ticket_id = ticket_id_in(session, ticket_id)
        actor = actor_in(session, who)
        apply_transition(session, ticket_id, Action.ITERATE, actor, rules)
        parent = session.get(Ticket, ticket_id)
        assert parent is not None
        requester = session.get(Member, actor.member_id)
        assert requester is not None
        child = open_ticket(
            session,
            parent.guild_id,
            requester,
            NewTicket(
                name=parent.name,
                kind=parent.kind,
                base_model=parent.base_model,
                trigger_word=parent.trigger_word,
                class_token=parent.class_token,
                description=parent.description,
            ),
            parent=parent,
        )
        images = session.scalars(
            select(DatasetImage).where(
                DatasetImage.ticket_id == parent.id, DatasetImage.status == ImageStatus.ACTIVE
            )
        ).all()
        captions = repo.current_captions(session, parent.id)
        for image in images:
            copy = DatasetImage(
                ticket_id=child.id,
                sha256=image.sha256,
                phash=image.phash,
                width=image.width,
                height=image.height,
                size_bytes=image.size_bytes,
                storage_key=image.storage_key,
                original_name=image.original_name,
                uploader_id=image.uploader_id,
            )
            session.add(copy)
            session.flush()
            if image.id in captions:
                repo.add_caption_revision(
                    session, copy.id, captions[image.id], author_id=None, source="iterate"
                )
        return child.id, child.number

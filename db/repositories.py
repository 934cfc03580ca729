"""Repository functions: each takes a session and never commits (the caller owns the
transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from db.base import utcnow
from db.models import (
    Artifact,
    ArtifactKind,
    AuditEntry,
    Caption,
    Contribution,
    ContributionKind,
    DatasetImage,
    Guild,
    ImageStatus,
    JobStatus,
    Member,
    OutboxMessage,
    SampleSet,
    Ticket,
    TrainingJob,
    Vote,
)
from lab.lifecycle import TicketFacts, TicketState
from lab.tasks import OutboxKind


def get_or_create_guild(session: Session, guild_id: int, name: str) -> Guild:
    guild = session.get(Guild, guild_id)
    if guild is None:
        guild = Guild(id=guild_id, name=name, config={})
        session.add(guild)
        session.flush()
    return guild


def get_or_create_member(
    session: Session, guild_id: int, discord_user_id: int, display_name: str
) -> Member:
    member = session.scalar(
        select(Member).where(Member.guild_id == guild_id, Member.discord_user_id == discord_user_id)
    )
    if member is None:
        member = Member(
            guild_id=guild_id, discord_user_id=discord_user_id, display_name=display_name
        )
        session.add(member)
        session.flush()
    elif display_name and member.display_name != display_name:
        member.display_name = display_name
    return member


def allocate_ticket_number(session: Session, guild_id: int) -> int:
    """The guild's next ticket number, taken atomically (the row lock serialises callers)."""
    taken = session.execute(
        update(Guild)
        .where(Guild.id == guild_id)
        .values(next_ticket_number=Guild.next_ticket_number + 1)
        .returning(Guild.next_ticket_number)
    ).scalar_one()
    return taken - 1


def current_captions(session: Session, ticket_id: int) -> dict[int, str]:
    """image id → newest caption text, for the ticket's active images that have one."""
    newest = (
        select(Caption.image_id, func.max(Caption.revision).label("rev"))
        .join(DatasetImage, DatasetImage.id == Caption.image_id)
        .where(DatasetImage.ticket_id == ticket_id, DatasetImage.status == ImageStatus.ACTIVE)
        .group_by(Caption.image_id)
        .subquery()
    )
    rows = session.execute(
        select(Caption.image_id, Caption.text).join(
            newest, (Caption.image_id == newest.c.image_id) & (Caption.revision == newest.c.rev)
        )
    )
    return {image_id: text for image_id, text in rows}


def add_caption_revision(
    session: Session, image_id: int, text: str, *, author_id: int | None, source: str = "manual"
) -> Caption:
    last = session.scalar(select(func.max(Caption.revision)).where(Caption.image_id == image_id))
    caption = Caption(
        image_id=image_id,
        revision=(last or 0) + 1,
        text=text,
        author_id=author_id,
        source=source,
    )
    session.add(caption)
    session.flush()
    return caption


def _first_tag(caption: str) -> str:
    return caption.split(",", 1)[0].strip()


def latest_job(session: Session, ticket_id: int) -> TrainingJob | None:
    return session.scalar(
        select(TrainingJob)
        .where(TrainingJob.ticket_id == ticket_id)
        .order_by(TrainingJob.id.desc())
        .limit(1)
    )


def vote_tally(
    session: Session, ticket: Ticket, *, count_own_votes: bool = False
) -> tuple[int, int]:
    """(up, down) for the epoch up for release: the chosen one, else the newest sample
    set's. Every sample set of the latest run at that epoch counts (a new /test prompts
    set adds votes, it never resets them), each member once (their latest vote); the
    requester's and the claimer's votes count only with ``count_own_votes``."""
    job = latest_job(session, ticket.id)
    sets = select(SampleSet.id, SampleSet.epoch).where(SampleSet.ticket_id == ticket.id)
    if job is not None:
        sets = sets.where(or_(SampleSet.job_id == job.id, SampleSet.job_id.is_(None)))
    rows = session.execute(sets.order_by(SampleSet.id)).all()
    if not rows:
        return 0, 0
    epoch = ticket.chosen_epoch
    if epoch is None:
        epoch = next((e for _, e in reversed(rows) if e is not None), None)
    chosen = [set_id for set_id, set_epoch in rows if set_epoch == epoch]
    if epoch is None:
        chosen = [rows[-1][0]]
    excluded = set() if count_own_votes else {ticket.requester_id, ticket.claimer_id}
    latest: dict[int, tuple[Any, int]] = {}
    votes = select(Vote.member_id, Vote.value, Vote.updated_at).where(
        Vote.sample_set_id.in_(chosen)
    )
    for member_id, value, updated in session.execute(votes).all():
        if member_id in excluded:
            continue
        if member_id not in latest or updated >= latest[member_id][0]:
            latest[member_id] = (updated, value)
    values = [value for _, value in latest.values()]
    return values.count(1), values.count(-1)


def saved_epochs(session: Session, ticket_id: int) -> frozenset[int]:
    """Epochs of the latest run with a stored LoRA file."""
    job = latest_job(session, ticket_id)
    if job is None:
        return frozenset()
    epochs = session.scalars(
        select(Artifact.epoch).where(
            Artifact.job_id == job.id,
            Artifact.kind == ArtifactKind.LORA,
            Artifact.epoch.is_not(None),
        )
    ).all()
    return frozenset(int(e) for e in epochs)


def ticket_facts(session: Session, ticket: Ticket, *, count_own_votes: bool = False) -> TicketFacts:
    """Everything the lifecycle policy needs to know about `ticket`, read now."""
    image_count = session.scalar(
        select(func.count())
        .select_from(DatasetImage)
        .where(DatasetImage.ticket_id == ticket.id, DatasetImage.status == ImageStatus.ACTIVE)
    )
    captions = current_captions(session, ticket.id)
    captioned = [text for text in captions.values() if text.strip()]
    missing_trigger = sum(1 for text in captioned if _first_tag(text) != ticket.trigger_word)
    claimer_name = ""
    if ticket.claimer_id is not None:
        claimer_name = (
            session.scalar(select(Member.display_name).where(Member.id == ticket.claimer_id)) or ""
        )
    job = latest_job(session, ticket.id)
    up, down = vote_tally(session, ticket, count_own_votes=count_own_votes)
    return TicketFacts(
        state=ticket.status,
        requester_id=ticket.requester_id,
        family=ticket.base_family,
        claimer_id=ticket.claimer_id,
        claimer_name=claimer_name,
        image_count=image_count or 0,
        uncaptioned_count=(image_count or 0) - len(captioned),
        missing_trigger_count=missing_trigger,
        trigger_word=ticket.trigger_word,
        has_valid_training_config=bool(job and job.config and job.status is JobStatus.QUEUED),
        chosen_epoch=ticket.chosen_epoch,
        saved_epochs=saved_epochs(session, ticket.id),
        votes_up=up,
        votes_down=down,
    )


def compare_and_set_status(
    session: Session,
    ticket_id: int,
    *,
    expected: TicketState,
    expected_revision: int,
    new: TicketState,
    **values: Any,
) -> bool:
    """Move the ticket only if nobody moved it since we read it; True when we won."""
    result = session.execute(
        update(Ticket)
        .where(
            Ticket.id == ticket_id,
            Ticket.status == expected,
            Ticket.revision == expected_revision,
        )
        .values(status=new, revision=Ticket.revision + 1, last_activity_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def add_audit(
    session: Session,
    ticket_id: int,
    *,
    actor_id: int | None,
    action: str,
    from_status: TicketState,
    to_status: TicketState | None,
    reason: str | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        ticket_id=ticket_id,
        actor_id=actor_id,
        action=action,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
    )
    session.add(entry)
    return entry


@dataclass(frozen=True, slots=True)
class OutboxItem:
    kind: str
    payload: dict[str, Any]
    idempotency_key: str


def add_outbox(session: Session, item: OutboxItem) -> OutboxMessage:
    """Queue `item`; the row remembers its ticket so the relay keeps a ticket's rows in
    order (the ticket is read from the payload: its ticket, job or sample set)."""
    row = OutboxMessage(
        kind=item.kind,
        payload=item.payload,
        idempotency_key=item.idempotency_key,
        ticket_id=_ticket_of(session, item.payload),
    )
    session.add(row)
    return row


def _ticket_of(session: Session, payload: dict[str, Any]) -> int | None:
    if payload.get("ticket_id") is not None:
        return int(payload["ticket_id"])
    if payload.get("job_id") is not None:
        job = session.get(TrainingJob, int(payload["job_id"]))
        return job.ticket_id if job else None
    if payload.get("sample_set_id") is not None:
        sample = session.get(SampleSet, int(payload["sample_set_id"]))
        return sample.ticket_id if sample else None
    return None


def record_contribution(
    session: Session, ticket_id: int, member_id: int, kind: ContributionKind, amount: int = 1
) -> None:
    """Count `amount` more contributions of `kind` by the member to the ticket."""
    row = session.scalar(
        select(Contribution).where(
            Contribution.ticket_id == ticket_id,
            Contribution.member_id == member_id,
            Contribution.kind == kind,
        )
    )
    if row is None:
        session.add(Contribution(ticket_id=ticket_id, member_id=member_id, kind=kind, count=amount))
    else:
        row.count += amount


def touch_ticket(session: Session, ticket: Ticket, why: str) -> None:
    """Activity on the ticket (images, captions): the inactivity clock restarts and the
    card shows the new counts; `why` makes the refresh's key unique to this change."""
    ticket.last_activity_at = utcnow()
    queue_card_refresh(session, ticket.id, f"{ticket.id}:{ticket.revision}:{why}")


def queue_card_refresh(session: Session, ticket_id: int, tag: str) -> None:
    """Ask the bot to re-render the ticket card; `tag` makes the idempotency key
    (``ticket-card:<tag>``) unique to the change that asked for it."""
    add_outbox(
        session,
        OutboxItem(OutboxKind.TICKET_CARD.value, {"ticket_id": ticket_id}, f"ticket-card:{tag}"),
    )

"""The lab's per-member limits (`lab.limits`) checked inside the service's transaction,
against what the database holds now."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db import repositories as repo
from db.base import utcnow
from db.models import AuditEntry, DatasetImage, Guild, ImageStatus, Ticket
from lab.lifecycle import OPEN_STATES
from lab.limits import HOUR, MemberLimits, check_count, check_rate, limits_from

SAMPLES_REQUESTED = "request_samples"
CAPTIONS_REQUESTED = "request_captions"


def member_limits(session: Session, guild_id: int) -> MemberLimits:
    guild = session.get(Guild, guild_id)
    return limits_from(guild.config or {} if guild else {})


def check_open_tickets(session: Session, guild_id: int, member_id: int) -> None:
    limits = member_limits(session, guild_id)
    open_count = session.scalar(
        select(func.count())
        .select_from(Ticket)
        .where(
            Ticket.guild_id == guild_id,
            Ticket.requester_id == member_id,
            Ticket.status.in_(OPEN_STATES),
        )
    )
    check_count(
        "open_tickets_per_member",
        limits.open_tickets_per_member,
        open_count or 0,
        1,
        "one frees up when a ticket of yours is released, cancelled or rejected",
    )


def check_dataset_room(session: Session, ticket: Ticket, images: int, size: int) -> None:
    """Room in the ticket's dataset for ``images`` more images of ``size`` bytes."""
    limits = member_limits(session, ticket.guild_id)
    count, stored = session.execute(
        select(func.count(), func.coalesce(func.sum(DatasetImage.size_bytes), 0)).where(
            DatasetImage.ticket_id == ticket.id, DatasetImage.status == ImageStatus.ACTIVE
        )
    ).one()
    frees = "removing images with /dataset remove frees room"
    check_count("images_per_ticket", limits.images_per_ticket, count, images, frees)
    mib = 2**20
    check_count(
        "storage_mib_per_ticket",
        limits.storage_mib_per_ticket,
        -(-int(stored) // mib),
        -(-size // mib),
        frees,
    )


def check_and_record_task(session: Session, ticket: Ticket, member_id: int, action: str) -> None:
    """Refuse a sample or caption task past the hourly limits; else record it (an audit
    row, which is what the next check counts)."""
    limits = member_limits(session, ticket.guild_id)
    since = utcnow() - HOUR
    recent = (
        select(AuditEntry.at)
        .join(Ticket, Ticket.id == AuditEntry.ticket_id)
        .where(
            Ticket.guild_id == ticket.guild_id, AuditEntry.action == action, AuditEntry.at > since
        )
    )
    mine = list(session.scalars(recent.where(AuditEntry.actor_id == member_id)))
    if action == SAMPLES_REQUESTED:
        check_rate("sample_tasks_per_hour", limits.sample_tasks_per_hour, mine, "sample renders")
        check_rate(
            "lab_sample_tasks_per_hour",
            limits.lab_sample_tasks_per_hour,
            list(session.scalars(recent)),
            "sample renders",
            subject="The lab",
        )
    else:
        check_rate("caption_tasks_per_hour", limits.caption_tasks_per_hour, mine, "caption runs")
    repo.add_audit(
        session,
        ticket.id,
        actor_id=member_id,
        action=action,
        from_status=ticket.status,
        to_status=None,
    )

"""How the bot names a ticket, resolved inside the service's own transaction.

A command knows the ticket only as Discord shows it: the ``ticket`` option (its number
in the guild) or the forum post the command runs in. Services take a `TicketKey` (a
`TicketRef`, or the ticket's id when the caller already has it, e.g. the relay or a
button whose custom id holds it) and resolve it with `ticket_id_in` in the same
session that does the work, so a command costs one transaction, not a look-up plus
the change.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Ticket, TrainingJob
from db.services import NotFound


@dataclass(frozen=True, slots=True)
class TicketRef:
    """Ticket #`number` of the guild, else the ticket of training job `job_id` (a
    #job-board button), else the ticket whose forum post is `thread_id`."""

    guild_id: int
    number: int | None = None
    thread_id: int | None = None
    job_id: int | None = None


TicketKey = TicketRef | int
"""A ticket's id, or a `TicketRef` to resolve in the service's session."""


def resolve_ticket(session: Session, ref: TicketRef) -> Ticket:
    """The ticket `ref` names, or `NotFound` with what the member should do instead."""
    if ref.number is not None:
        ticket = session.scalar(
            select(Ticket).where(Ticket.guild_id == ref.guild_id, Ticket.number == ref.number)
        )
        if ticket is None:
            raise NotFound(f"There is no ticket #{ref.number} in this lab.", code="no_ticket")
        return ticket
    if ref.job_id is not None:
        ticket = session.scalar(
            select(Ticket)
            .join(TrainingJob, TrainingJob.ticket_id == Ticket.id)
            .where(Ticket.guild_id == ref.guild_id, TrainingJob.id == ref.job_id)
        )
        if ticket is None:
            raise NotFound("This job no longer exists.", code="no_job")
        return ticket
    ticket = None
    if ref.thread_id is not None:
        ticket = session.scalar(
            select(Ticket).where(
                Ticket.guild_id == ref.guild_id, Ticket.forum_thread_id == ref.thread_id
            )
        )
    if ticket is None:
        raise NotFound(
            "Run this in a ticket's post in the requests forum, or name the ticket "
            "with the `ticket` option.",
            code="no_ticket",
        )
    return ticket


def ticket_id_in(session: Session, key: TicketKey) -> int:
    """The id `key` stands for (a plain id is taken as is; its row is checked by the
    service that reads it)."""
    if isinstance(key, TicketRef):
        return resolve_ticket(session, key).id
    return key

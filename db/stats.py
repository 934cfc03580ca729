"""`/lora stats`: who contributed what."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Contribution, Member, Ticket
from lab.lifecycle import TicketState


@dataclass(frozen=True, slots=True)
class LeaderLine:
    name: str
    total: int
    by_kind: dict[str, int]


def leaderboard(factory: sessionmaker[Session], guild_id: int, limit: int = 10) -> list[LeaderLine]:
    """Members ranked by their contributions (each upload, caption, claim, vote…)."""
    with factory() as session:
        rows = session.execute(
            select(Member.display_name, Contribution.kind, func.sum(Contribution.count))
            .join(Member, Member.id == Contribution.member_id)
            .where(Member.guild_id == guild_id)
            .group_by(Member.id, Member.display_name, Contribution.kind)
        ).all()
    people: dict[str, dict[str, int]] = {}
    for name, kind, total in rows:
        people.setdefault(name, {})[kind.value] = int(total or 0)
    lines = [LeaderLine(n, sum(k.values()), k) for n, k in people.items()]
    lines.sort(key=lambda line: (-line.total, line.name))
    return lines[:limit]


def ticket_counts(factory: sessionmaker[Session], guild_id: int) -> dict[str, int]:
    with factory() as session:
        rows = session.execute(
            select(Ticket.status, func.count())
            .where(Ticket.guild_id == guild_id)
            .group_by(Ticket.status)
        ).all()
    return {status.value: count for status, count in rows if isinstance(status, TicketState)}

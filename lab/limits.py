"""Per-member limits of a lab, set by a Lab Admin with `/lab config limit:… value:…`.

Without them one member could open sixty tickets, queue forty GPU sample renders or
fill the store. Each limit has a sensible default; a refused action names the limit
and says when it frees up, so the member knows what to wait for.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from lab.errors import LabError

__all__ = [
    "LIMIT_NAMES",
    "LimitReached",
    "MemberLimits",
    "check_count",
    "check_rate",
    "limits_from",
    "set_limit",
]

HOUR = timedelta(hours=1)


class MemberLimits(BaseModel):
    """What one member may have or start; stored under ``limits`` in the lab's config."""

    model_config = {"frozen": True, "extra": "forbid"}

    open_tickets_per_member: int = Field(3, ge=1, description="Open requests per member.")
    images_per_ticket: int = Field(400, ge=1, description="Images in one ticket's dataset.")
    storage_mib_per_ticket: int = Field(
        2048, ge=1, description="Stored bytes of one ticket's images, in MiB."
    )
    sample_tasks_per_hour: int = Field(
        4, ge=1, description="`/test prompts` renders one member may queue per hour."
    )
    caption_tasks_per_hour: int = Field(
        4, ge=1, description="`/caption auto` runs one member may queue per hour."
    )
    lab_sample_tasks_per_hour: int = Field(
        12,
        ge=1,
        description="Sample renders the whole lab may queue per hour: samples share the "
        "GPUs with training, and must not starve it.",
    )


LIMIT_NAMES = tuple(MemberLimits.model_fields)


class LimitReached(LabError):
    code = "limit_reached"


def limits_from(config: Mapping[str, Any]) -> MemberLimits:
    """The limits in a lab's stored config (defaults for what an admin did not set)."""
    raw = config.get("limits") or {}
    known = {k: v for k, v in raw.items() if k in MemberLimits.model_fields}
    return MemberLimits(**known)


def set_limit(config: Mapping[str, Any], name: str, value: int) -> dict[str, Any]:
    """The ``limits`` entry of a lab's config with ``name`` set to ``value``; raises
    :class:`LabError` for an unknown name or a value out of range."""
    if name not in MemberLimits.model_fields:
        raise LabError(f"There is no limit called {name}; limits: {', '.join(LIMIT_NAMES)}.")
    raw = {**(config.get("limits") or {}), name: value}
    try:
        limits = MemberLimits(**raw)
    except ValidationError:
        raise LabError(f"{name} must be a whole number of at least 1.") from None
    return limits.model_dump()


def check_count(name: str, limit: int, used: int, adding: int, frees: str) -> None:
    """Raise :class:`LimitReached` when ``used + adding`` passes ``limit``."""
    if used + adding <= limit:
        return
    raise LimitReached(
        f"This lab's limit {name} is {limit:,} and {used:,} are in use; {frees}. "
        "A Lab Admin can change it with /lab config."
    )


def check_rate(
    name: str, limit: int, recent: list[datetime], what: str, *, subject: str = "You"
) -> None:
    """Raise :class:`LimitReached` when ``recent`` (times within the last hour) already
    holds ``limit`` entries; the message says when the oldest leaves the window."""
    if len(recent) < limit:
        return
    resets = min(recent) + HOUR
    raise LimitReached(
        f"{subject} reached this lab's limit {name} ({limit} {what} an hour); the next "
        f"one is possible at {resets:%H:%M} UTC (<t:{int(resets.timestamp())}:R>)."
    )

"""Joining and leaving lab roles: what to change and what to answer (pure; the
Discord role itself is changed by `_views.toggle_role`, the source of truth)."""

from __future__ import annotations

from bot.context import ROLE_NAMES, SELF_SERVICE_ROLES
from bot.errors import NotAllowed
from lab.lifecycle import LabRole


def role_change(
    name: str, *, has: bool, join: bool | None, approval_only: bool, manages_server: bool
) -> tuple[bool | None, str]:
    """(``True`` to give the role, ``False`` to take it, ``None`` for nothing; the reply).
    ``join=None`` toggles. An approval-only role is given only by a Lab Admin."""
    want = (not has) if join is None else join
    if want == has:
        return None, f"You {'already have' if has else 'do not have'} the {name} role."
    if want and approval_only and not manages_server:
        raise NotAllowed(f"{name} is approval-only in this lab: ask a Lab Admin to give it to you.")
    if want:
        return True, f"You are now a {name}."
    return False, f"You left the {name} role."


def self_service_role(value: str) -> LabRole:
    """The self-assignable lab role named ``value``; anything else is refused.

    The option's choices are only what Discord's client shows: a hand-made interaction
    can send any value (``admin``), so the value is checked again here.
    """
    role: LabRole | None
    try:
        role = LabRole(value)
    except ValueError:
        role = None
    if role is None or role not in SELF_SERVICE_ROLES:
        names = ", ".join(ROLE_NAMES[r] for r in SELF_SERVICE_ROLES)
        raise NotAllowed(f"Members can take or leave only these roles themselves: {names}.")
    return role

"""`bot/exts/roles/_logic.py` as a pure function: what joining or leaving a role does."""

from __future__ import annotations

import pytest

from bot.errors import NotAllowed
from bot.exts.roles._logic import role_change


def change(*, has: bool, join: bool | None, approval_only: bool = False, admin: bool = False):
    return role_change(
        "Trainer", has=has, join=join, approval_only=approval_only, manages_server=admin
    )


def test_joining_and_leaving():
    assert change(has=False, join=True) == (True, "You are now a Trainer.")
    assert change(has=True, join=False) == (False, "You left the Trainer role.")


def test_the_picker_button_toggles():
    assert change(has=False, join=None)[0] is True
    assert change(has=True, join=None)[0] is False


def test_asking_for_what_one_already_has_changes_nothing():
    assert change(has=True, join=True) == (None, "You already have the Trainer role.")
    assert change(has=False, join=False) == (None, "You do not have the Trainer role.")


def test_an_approval_only_role_is_given_only_to_those_who_manage_the_server():
    with pytest.raises(NotAllowed, match="Trainer is approval-only in this lab"):
        change(has=False, join=True, approval_only=True)
    assert change(has=False, join=True, approval_only=True, admin=True)[0] is True
    assert change(has=True, join=False, approval_only=True) == (False, "You left the Trainer role.")

"""Discord's 3 seconds: every handler acknowledges before any database work, so even a
database that takes 6 (virtual) seconds per call never makes a member see "This
interaction failed". simcord enforces the deadline on its virtual clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.database import Database
from lab.lifecycle import TicketState
from tests.bot.conftest import followup_text, ready_ticket, running_lab, unexpected_errors
from tests.bot.matrix_setup import members, ticket_in

pytestmark = pytest.mark.anyio


class SlowDatabase(Database):
    """The real database, `delay` seconds late on every call (virtual time)."""

    delay = 0.0

    async def run(self, service: Any, /, *args: Any, **kwargs: Any) -> Any:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().run(service, *args, **kwargs)


def slow(db: Database) -> SlowDatabase:
    return SlowDatabase(db.factory)


COMMANDS = [
    ("lora status", {}, "Ticket #"),
    ("lora list", {}, "Aria"),
    ("dataset status", {}, ""),
    ("caption tags", {}, "ar1a"),
    ("lora stats", {}, ""),
    ("train workers", {}, "No workers"),
    ("train config", {"kind": "character"}, "You can't configure training"),
]


async def test_no_handler_misses_the_deadline_with_a_slow_database(tmp_path, template_db):
    async with running_lab(tmp_path, template_db, wrap_factory=slow) as lab:
        await lab.setup()
        requester = lab.member("rita")
        thread, _ = await ready_ticket(lab, requester)
        lab.bot.db.delay = 6.0
        for command, options, expect in COMMANDS:
            result = await requester.slash(thread, command, **options)
            assert result.acknowledged and result.deferred, command
            await lab.env.advance_time(60)
            assert expect in followup_text(result) or (result.response and result.response.embeds)
        # Modals: /lora request opens at once; /caption edit opens within its budget.
        shown = await requester.slash(lab.general, "lora request", kind="style", base="sdxl")
        assert shown.modal is not None
        people = members(lab)
        lab.bot.db.delay = 0.0
        number = ticket_in(lab, people, TicketState.CAPTIONING)
        lab.bot.db.delay = 6.0
        edit = await people["requester"].slash(lab.general, "caption edit", ticket=number, image=1)
        await lab.env.advance_time(60)
        assert edit.modal is not None
        assert not unexpected_errors(lab.env)

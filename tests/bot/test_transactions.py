"""A command costs one transaction: the ticket is resolved inside the service's own
session (`db.refs.TicketRef`), not looked up first. Counted with SQLAlchemy's
``after_begin`` session event on the bot's session factory, with the relay unloaded so
only the command's own work is counted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from db.tickets import locate_ticket
from lab.lifecycle import TicketState
from tests.bot.conftest import followup_text, running_lab, seed_images
from tests.bot.images import png
from tests.bot.matrix_setup import members, ticket_in

pytestmark = pytest.mark.anyio
S = TicketState

# (command, state, who runs it, options, transactions, what the member reads)
COMMANDS = [
    ("lora status", S.DATASET, "nobody", {}, 1, None),
    ("dataset status", S.CAPTIONING, "nobody", {}, 1, None),
    ("dataset done", S.DATASET, "requester", {}, 1, "captioning is open"),
    ("dataset done", S.DATASET, "nobody", {}, 1, "Only"),
    ("caption tags", S.CAPTIONING, "nobody", {}, 1, "/16"),
    ("caption edit", S.CAPTIONING, "requester", {"image": 1}, 1, None),
    ("caption done", S.CAPTIONING, "requester", {}, 1, "review"),
    ("dataset approve", S.REVIEW, "requester", {}, 1, "Approved"),
    ("train config", S.CLAIMED, "claimer", {"kind": "character"}, 1, "will train with"),
    ("train config", S.CLAIMED, "claimer", {"kind": "character", "overrides": "x"}, 1,
     "write overrides as key=value"),
    ("train start", S.CLAIMED, "claimer", {}, 1, "is queued"),
    ("train unclaim", S.CLAIMED, "claimer", {}, 1, "back on #job-board"),
    ("lora release", S.TESTING, "admin", {"epoch": 2, "override": True}, 1, "Released epoch 2"),
    ("lora iterate", S.RELEASED, "requester", {}, 1, "as the next version"),
    # the permission check and what ingest needs, before the download; then the rows
    ("dataset upload", S.DATASET, "requester", {"file": ("a.png", png(1))}, 2, "files added"),
]  # fmt: skip


@contextmanager
def counted(factory: Any) -> Iterator[list[int]]:
    """How many session transactions begin on `factory` inside the block."""
    begins = [0]

    def on_begin(*_: Any) -> None:
        begins[0] += 1

    event.listen(factory, "after_begin", on_begin)
    try:
        yield begins
    finally:
        event.remove(factory, "after_begin", on_begin)


@pytest.mark.parametrize(
    ("command", "state", "role", "options", "expected", "reply"),
    COMMANDS,
    ids=[f"{c[0]}-{c[2]}" for c in COMMANDS],
)
async def test_a_command_costs_one_transaction(
    tmp_path, template_db, command, state, role, options, expected, reply
):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, state)
        if state is S.DATASET and command != "dataset upload":  # enough images to finish
            ticket_id = locate_ticket(lab.factory, lab.guild.id, number=number)
            seed_images(lab, people["requester"], ticket_id)
        await lab.relay()
        await lab.bot.unload_extension("bot.exts.relay")  # its deliveries are not the command's
        warm = await people[role].slash(lab.general, "lora status", ticket=number)
        assert warm.acknowledged  # the lab's config is cached from here on
        with counted(lab.factory) as begins:
            result = await people[role].slash(lab.general, command, ticket=number, **options)
        assert result.acknowledged
        if reply is not None:
            assert reply in followup_text(result), followup_text(result)
        assert begins[0] == expected, (command, role, begins[0])


async def test_claiming_from_the_job_board_costs_one_transaction(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        ticket_in(lab, people, S.READY)
        await lab.relay()
        await lab.bot.unload_extension("bot.exts.relay")
        offer = lab.channel("job-board").last_message
        with counted(lab.factory) as begins:
            result = await people["trainer"].click(offer, label="Claim")
        assert followup_text(result).startswith("You claimed this job")
        assert begins[0] == 1

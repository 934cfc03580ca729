"""Per-member limits, set in /lab config: a refused action names the limit and when it
frees up (issue 14, point 8)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import SampleSet, Ticket
from lab.lifecycle import TicketState
from tests.bot.conftest import followup_text, open_request, running_lab
from tests.bot.matrix_setup import members, ticket_in

pytestmark = pytest.mark.anyio


def count(lab, model) -> int:
    with lab.factory() as session:
        return session.scalar(select(func.count()).select_from(model))


async def request(lab, member) -> str:
    shown = await member.slash(lab.general, "lora request", kind="character", base="sd15")
    fields = {"name": "Aria", "trigger": "ar1a", "class_token": "woman", "description": ""}
    return followup_text(await member.submit_modal(shown, fields))


async def test_open_tickets_per_member_is_limited(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        set_to = await lab.admin.slash(
            lab.general, "lab config", limit="open_tickets_per_member", value=2
        )
        assert followup_text(set_to) == "open_tickets_per_member is now 2."
        rita = lab.member("rita")
        for _ in range(2):
            await open_request(lab, rita)
        assert await request(lab, rita) == (
            "This lab's limit open_tickets_per_member is 2 and 2 are in use; one frees up "
            "when a ticket of yours is released, cancelled or rejected. A Lab Admin can "
            "change it with /lab config."
        )
        assert count(lab, Ticket) == 2
        assert "opened" in await request(lab, lab.member("other"))
        assert not lab.env.errors  # refused with a reply, not an unhandled error


async def test_sample_tasks_per_hour_are_limited_and_say_when_they_reset(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        await lab.admin.slash(lab.general, "lab config", limit="sample_tasks_per_hour", value=2)
        people = members(lab)
        number = ticket_in(lab, people, TicketState.TESTING)
        before = count(lab, SampleSet)
        for i in range(2):
            asked = await people["tester"].slash(
                lab.general, "test prompts", ticket=number, prompts=f"ar1a, pose {i}"
            )
            assert "Asked the workers" in followup_text(asked)
        refused = followup_text(
            await people["tester"].slash(
                lab.general, "test prompts", ticket=number, prompts="ar1a, beach"
            )
        )
        assert refused.startswith(
            "You reached this lab's limit sample_tasks_per_hour (2 sample renders an hour); "
            "the next one is possible at "
        )
        assert " UTC (<t:" in refused
        assert count(lab, SampleSet) == before + 2
        other = await people["admin"].slash(
            lab.general, "test prompts", ticket=number, prompts="ar1a, park"
        )
        assert "Asked the workers" in followup_text(other)  # the limit is per member


async def test_the_whole_lab_caps_sample_renders_so_training_is_not_starved(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        await lab.admin.slash(lab.general, "lab config", limit="lab_sample_tasks_per_hour", value=2)
        people = members(lab)
        number = ticket_in(lab, people, TicketState.TESTING)
        for who in ("tester", "admin"):
            asked = await people[who].slash(
                lab.general, "test prompts", ticket=number, prompts="ar1a, pose"
            )
            assert "Asked the workers" in followup_text(asked)
        refused = await lab.member("tess2", "Tester").slash(
            lab.general, "test prompts", ticket=number, prompts="ar1a, beach"
        )
        assert followup_text(refused).startswith(
            "The lab reached this lab's limit lab_sample_tasks_per_hour (2 sample renders an hour)"
        )


async def test_images_per_ticket_are_limited(tmp_path, template_db):
    from tests.bot.images import png

    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        await lab.admin.slash(lab.general, "lab config", limit="images_per_ticket", value=1)
        thread = await open_request(lab, lab.member("rita"))
        curator = lab.member("cora", "Dataset Curator")
        refused = await curator.slash(
            thread, "dataset upload", file=("a.png", png(1)), file2=("b.png", png(2))
        )
        assert followup_text(refused).startswith(
            "This lab's limit images_per_ticket is 1 and 0 are in use; removing images"
        )
        ok = await curator.slash(thread, "dataset upload", file=("a.png", png(1)))
        assert "✅ a.png" in followup_text(ok)
        full = await curator.slash(thread, "dataset upload", file=("b.png", png(2)))
        assert followup_text(full).startswith("This lab's limit images_per_ticket is 1 and 1")

"""Member text that reaches a sampler is plain text: a class token or a test prompt
cannot carry kohya `--` options that size a GPU render (issue 14, point 3)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from db.models import SampleSet, Ticket
from lab.lifecycle import TicketState
from tests.bot.conftest import followup_text, running_lab
from tests.bot.matrix_setup import members, ticket_in

pytestmark = pytest.mark.anyio


def count(lab, model) -> int:
    with lab.factory() as session:
        return session.scalar(select(func.count()).select_from(model))


async def request_with(lab, member, trigger: str, class_token: str) -> str:
    shown = await member.slash(lab.general, "lora request", kind="character", base="sd15")
    submitted = await member.submit_modal(
        shown,
        {"name": "Aria", "trigger": trigger, "class_token": class_token, "description": ""},
    )
    return followup_text(submitted)


async def test_trigger_and_class_token_cannot_carry_sampler_options(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        rita = lab.member("rita")
        text = await request_with(lab, rita, "ar1a", "woman --w 16384 --h 16384")
        assert text == (
            "The class token must be plain text: `--` options (like `--w 1024`) are not "
            "accepted; the lab sets sample sizes and steps itself."
        )
        text = await request_with(lab, rita, "--s", "woman")
        assert text.startswith("The trigger word must be plain text: `--` options")
        text = await request_with(lab, rita, "ar1a", "woman, nsfw")
        assert text == "The class token must be one tag without commas, e.g. `woman`."
        assert count(lab, Ticket) == 0
        assert not lab.env.errors  # refused with a reply, not an unhandled error
        assert "Ticket #1 opened" in await request_with(lab, rita, "ar1a", "red-haired woman")


async def test_test_prompts_cannot_carry_sampler_options(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.TESTING)
        before, sent = count(lab, SampleSet), len(lab.tasks.sent)
        result = await people["tester"].slash(
            lab.general, "test prompts", ticket=number, prompts="ar1a, beach --w 4096 --h 4096"
        )
        assert followup_text(result).startswith("The prompt must be plain text: `--` options")
        assert count(lab, SampleSet) == before and len(lab.tasks.sent) == sent

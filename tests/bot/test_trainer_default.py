"""A brand-new account cannot make itself a Trainer and hold a GPU: Trainer is
approval-only by default, granted by a Lab Admin; an admin may open it (issue 14,
point 9)."""

from __future__ import annotations

import pytest

from tests.bot.conftest import followup_text, running_lab

pytestmark = pytest.mark.anyio


async def test_trainer_is_approval_only_until_an_admin_opens_it(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        newcomer = lab.member("newcomer")
        asked = await newcomer.slash(lab.general, "role join", role="trainer")
        assert followup_text(asked) == (
            "Trainer is approval-only in this lab: ask a Lab Admin to give it to you."
        )
        picker = next(m for m in lab.channel("lab-guide").history() if m.components)
        clicked = await newcomer.click(picker, label="Trainer")
        assert "approval-only" in followup_text(clicked)
        joined = await newcomer.slash(lab.general, "role join", role="tester")
        assert followup_text(joined) == "You are now a Tester."
        opened = await lab.admin.slash(lab.general, "lab config", approval_only="trainer")
        assert followup_text(opened) == "Trainer is now open to everyone."
        asked = await newcomer.slash(lab.general, "role join", role="trainer")
        assert followup_text(asked) == "You are now a Trainer."

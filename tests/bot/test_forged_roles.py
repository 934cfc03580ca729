"""`/role join` checks the value it receives, not only the choices the client shows: a
hand-made interaction with `role=admin` makes no one a Lab Admin (issue 14, point 7)."""

from __future__ import annotations

import pytest
import simcord.interactions

from tests.bot.conftest import followup_text, running_lab

pytestmark = pytest.mark.anyio


async def test_a_forged_role_option_is_refused(tmp_path, template_db, monkeypatch):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        mallory = lab.member("mallory")
        # A client that sends whatever it likes: simcord's own choice check is skipped.
        monkeypatch.setattr(
            simcord.interactions, "validate_option_value", lambda command, option, value: value
        )
        for forged in ("admin", "Lab Admin", "bogus"):
            result = await mallory.slash(lab.general, "role join", role=forged)
            assert followup_text(result) == (
                "Members can take or leave only these roles themselves: Dataset Curator, "
                "Captioner, Trainer, Tester."
            )
        # What the (simulated) server says the member holds.
        stored = lab.env.backend.get_guild(lab.guild.id).members[mallory.id]
        assert lab.guild.roles["Lab Admin"].id not in stored.role_ids
        result = await mallory.slash(lab.general, "role join", role="tester")
        assert followup_text(result) == "You are now a Tester."

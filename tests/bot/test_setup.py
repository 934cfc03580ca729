"""`/lab setup`, roles and requests, seen from the members' side."""

from __future__ import annotations

import pytest

from tests.bot.conftest import followup_text, running_lab

pytestmark = pytest.mark.anyio


async def test_setup_creates_the_lab_once(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        channels = set(lab.guild.channels)
        assert {"lab-requests", "job-board", "testing", "releases", "lab-guide"} <= channels
        assert {"Lab Admin", "Trainer", "Tester", "Captioner", "Dataset Curator"} <= set(
            lab.guild.roles
        )
        guide = lab.channel("lab-guide")
        assert len(guide.pinned_messages()) == 5
        again = await lab.admin.slash(lab.general, "lab setup")
        assert "nothing" in followup_text(again)
        assert set(lab.guild.channels) == channels
        assert len(lab.channel("lab-guide").history()) == len(guide.history())

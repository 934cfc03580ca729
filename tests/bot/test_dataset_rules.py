"""`/dataset status` and the FINISH_DATASET gate count images against the same minimum:
the lab's configured `rules.min_images`, not the family's default (15 for SD 1.5)."""

from __future__ import annotations

import pytest

from db.tickets import locate_ticket
from lab.families import BaseFamily
from lab.settings import LabRules
from tests.bot.conftest import followup_text, open_request, running_lab, seed_images

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("minimum", [10, 20])
async def test_status_warning_and_gate_use_the_labs_minimum(tmp_path, template_db, minimum):
    rules = LabRules(min_images={BaseFamily.SD15: minimum, BaseFamily.SDXL: 12})
    async with running_lab(tmp_path, template_db, settings={"rules": rules}) as lab:
        await lab.setup()
        rita = lab.member("rita")
        thread = await open_request(lab, rita)
        seed_images(lab, rita, locate_ticket(lab.factory, lab.guild.id, channel_id=thread.id), 12)
        status = await rita.slash(thread, "dataset status")
        warnings = {f.name: f.value for f in status.response.embeds[0].fields}["Warnings"]
        done = followup_text(await rita.slash(thread, "dataset done"))
        if minimum <= 12:
            assert "more images needed" not in warnings
            assert "at least" not in done
        else:
            assert f"8 more images needed (minimum {minimum} for sd15)." in warnings
            assert f"needs at least {minimum} images; this ticket has 12" in done

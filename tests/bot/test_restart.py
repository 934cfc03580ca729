"""Point 4: a modal opened before the bot restarts still works after it."""

from __future__ import annotations

import pytest

from db.dataset import dataset_status
from db.tickets import Who, act, locate_ticket
from lab.lifecycle import Action, LabRole
from tests.bot.conftest import followup_text, running_lab, seed_images

pytestmark = pytest.mark.anyio


async def test_a_request_modal_opened_before_a_restart_is_accepted_after_it(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        rita = lab.member("rita")
        shown = await rita.slash(lab.general, "lora request", kind="style", base="sdxl")
        assert shown.modal is not None
        await lab.restart()  # while rita is still typing
        submitted = await rita.submit_modal(
            shown, {"name": "Ink", "trigger": "1nk", "class_token": "style"}
        )
        assert "Ticket #1 opened" in followup_text(submitted)
        await lab.relay()
        (post,) = lab.channel("lab-requests").threads
        card = {f.name: f.value for f in post.history()[0].embeds[0].fields}
        assert "sdxl" in card["Base"] and card["Trigger word"] == "`1nk`"


async def test_a_caption_modal_opened_before_a_restart_saves_after_it(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        rita, cap = lab.member("rita"), lab.member("cap", "Captioner")
        shown = await rita.slash(lab.general, "lora request", kind="character", base="sd15")
        await rita.submit_modal(shown, {"name": "Aria", "trigger": "ar1a", "class_token": "woman"})
        await lab.relay()
        thread = lab.channel("lab-requests").threads[-1]
        ticket_id = locate_ticket(lab.factory, lab.guild.id, channel_id=thread.id)
        seed_images(lab, rita, ticket_id)
        who = Who(lab.guild.id, rita.id, rita.name, frozenset({LabRole.CURATOR}), "LoRA Lab")
        act(lab.factory, who, ticket_id, Action.FINISH_DATASET, lab.bot.rules)
        image = dataset_status(lab.factory, ticket_id, lab.bot.rules).images[0][0]

        shown = await cap.slash(thread, "caption edit", image=image)
        assert shown.modal is not None
        await lab.restart()
        saved = await cap.submit_modal(shown, {"text": "ar1a, woman, laughing"})
        assert f"Caption of image {image} saved: `ar1a, woman, laughing`" in followup_text(saved)

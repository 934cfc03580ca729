"""A DoRA model's release post says what each of the lab's apps does with DoRA, and
attaches the plain-LoRA fit first when one of those apps applies DoRA wrongly."""

from __future__ import annotations

import json

import pytest

from db.models import TrainingJob
from lab.apps import App
from lab.lifecycle import TicketState
from lab.settings import LabRules
from tests.bot.conftest import followup_text, running_lab
from tests.bot.matrix_setup import members, ticket_in
from tests.bot.worker_sim import finish_training

pytestmark = pytest.mark.anyio

# A safetensors file with only its header: the fit's metadata, as the trainer writes it.
_HEADER = json.dumps({"__metadata__": {"loralab_dora_compat_relative_error": "0.3608"}})
FIT = len(_HEADER).to_bytes(8, "little") + _HEADER.encode()

DORA = {"preset": "sd15-character", "network_module": "lycoris.kohya",
        "network_args": ["algo=lora", "dora_wd=True"]}  # fmt: skip


async def _released(lab, config: dict, *, compat: bool = True):
    people = members(lab)
    number = ticket_in(lab, people, TicketState.TRAINING)
    await lab.relay()
    job_id = lab.tasks.sent[-1]["payload"]["job_id"]
    with lab.factory.begin() as session:
        session.get(TrainingJob, job_id).config = config
    finish_training(lab.factory, lab.storage, job_id, lab.bot.rules, lora_bytes=b"dora-file")
    if compat:  # what the worker stores beside each DoRA checkpoint
        for epoch in (1, 2):
            key = f"jobs/{job_id}/lora-e{epoch:04d}-lora-compat.safetensors"
            lab.storage.put_bytes(key, FIT)
    await lab.relay()
    result = await lab.admin.slash(lab.general, "lora release", ticket=number, epoch=1,
                                   override=True)  # fmt: skip
    assert "Released epoch 1" in followup_text(result)
    post = lab.channel("releases").last_message
    return post, {f.name: f.value for f in post.embeds[0].fields}


async def test_default_apps_get_the_lora_fit_first_and_the_dora_original(
    tmp_path, template_db
) -> None:
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        post, fields = await _released(lab, DORA)
        names = [a.filename for a in post.attachments]
        assert names == ["ar1a-v1-e1-lora-compat.safetensors", "ar1a-v1-e1.safetensors"]
        text = fields["DoRA"]
        assert "`ar1a-v1-e1-lora-compat.safetensors` (attached first) is a plain LoRA" in text
        assert "(fit error 36% of the weight change)" in text
        assert "`ar1a-v1-e1.safetensors` is the DoRA original, for LyCORIS" in text
        for app in ("comfyui:", "forge:", "a1111:", "diffusers: drops dora_scale"):
            assert app in text


async def test_a_lab_whose_apps_read_dora_right_gets_the_original_only(
    tmp_path, template_db
) -> None:
    rules = LabRules(release_apps=(App.LYCORIS,))
    async with running_lab(tmp_path, template_db, settings={"rules": rules}) as lab:
        await lab.setup()
        post, fields = await _released(lab, DORA)
        assert [a.filename for a in post.attachments] == ["ar1a-v1-e1.safetensors"]
        assert fields["DoRA"].endswith("lycoris: applies it right")


async def test_without_a_stored_fit_the_post_still_warns(tmp_path, template_db) -> None:
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        post, fields = await _released(lab, DORA, compat=False)
        assert [a.filename for a in post.attachments] == ["ar1a-v1-e1.safetensors"]
        assert "is a DoRA model. What your app does with it:" in fields["DoRA"]
        assert "a1111: normalises over the input axis" in fields["DoRA"]


async def test_a_plain_lora_release_has_no_dora_note(tmp_path, template_db) -> None:
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        post, fields = await _released(lab, {"preset": "sd15-character"})
        assert "DoRA" not in fields
        assert [a.filename for a in post.attachments] == ["ar1a-v1-e1.safetensors"]

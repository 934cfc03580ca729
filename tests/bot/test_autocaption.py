"""`/caption auto` seen from Discord: a captioner queues it, the task reaches the
(recorded) Celery sender, a worker's service captions the stored images with a tiny
tagger built in code, and the relay posts the "ready" notice in the ticket's thread."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Caption, DatasetImage
from db.tickets import act, locate_ticket
from lab.lifecycle import Action
from lab.settings import WorkerSettings
from lab.tasks import CaptionPayload
from tests.bot.conftest import followup_text, open_request, running_lab, seed_images, who_of
from tests.bot.images import png

pytestmark = pytest.mark.anyio


async def test_caption_auto_queues_the_tagger_and_the_thread_hears_when_ready(
    tmp_path, template_db
):
    pytest.importorskip("onnxruntime")
    from trainer.captioners.tiny import build_tiny_tagger
    from worker.captioning import run_caption_request
    from worker.runtime import Runtime

    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        requester, captioner = lab.member("rita"), lab.member("cara", "Captioner")
        thread = await open_request(lab, requester)
        ticket_id = locate_ticket(lab.factory, lab.guild.id, channel_id=thread.id)
        seed_images(lab, requester, ticket_id, count=15)
        for i in range(15):  # the pictures behind seed_images' storage keys
            lab.storage.put_bytes(f"images/{i}.png", png(i, (96, 96)))
        act(lab.factory, who_of(lab, requester), ticket_id, Action.FINISH_DATASET, lab.bot.rules)

        refused = await lab.member("olly").slash(thread, "caption auto", overwrite=True)
        assert "edit captions" in followup_text(refused) and refused.ephemeral
        result = await captioner.slash(thread, "caption auto", kind="tagger", overwrite=True)
        assert result.ephemeral
        assert followup_text(result).startswith(
            "Auto-captioning queued: 15 images, every image (new revisions), as tags."
        )
        await lab.relay()
        (sent,) = [t for t in lab.tasks.sent if t["name"] == "loralab.caption"]
        assert sent["queue"] == "cpu" and sent["task_id"].startswith(
            f"loralab.caption:{ticket_id}:"
        )

        # A CPU worker runs the task: the same service the Celery task calls.
        settings = WorkerSettings(home=tmp_path / "worker", database_url="sqlite://", captioning={
            "models": {"wd-tiny": {"kind": "tagger", "model": str(
                build_tiny_tagger(tmp_path / "wd"))}}})  # fmt: skip
        rt = Runtime(settings, None, lab.factory, lab.storage, "cpu-1")  # type: ignore[arg-type]
        assert run_caption_request(rt, CaptionPayload(**sent["payload"])) == 15
        await lab.relay()
        ready = [m.content for m in thread.history() if m.content.startswith("Auto-captions")]
        assert ready and ready[-1].startswith("Auto-captions are ready: 15 image(s) captioned")

        with lab.factory() as session:
            first = session.scalar(select(DatasetImage.id).where(
                DatasetImage.ticket_id == ticket_id).order_by(DatasetImage.id))  # fmt: skip
            auto = session.scalar(select(Caption).where(
                Caption.image_id == first).order_by(Caption.revision.desc()))  # fmt: skip
        assert (auto.source, auto.author_id, auto.revision) == ("auto", None, 2)
        shown = await captioner.slash(thread, "caption show", image=first)
        assert f"`{auto.text}`" in followup_text(shown)
        assert auto.text.startswith("ar1a, woman, hatsune miku")  # trigger, class, tags

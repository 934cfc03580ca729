"""The whole story through simcord, several members with different roles, asserting on
what they see: setup → request → 20 uploads → captions → approve → claim race →
start → progress edits → sample grid → votes → release with credits."""

from __future__ import annotations

import pytest

from tests.bot.conftest import followup_text, open_request, running_lab
from tests.bot.images import png, zip_of
from tests.bot.worker_sim import finish_training, report_progress

pytestmark = pytest.mark.anyio


async def test_full_story(tmp_path, template_db):
    async with running_lab(tmp_path, template_db, progress_interval=10.0) as lab:
        await lab.setup()
        requester = lab.member("rita")
        curator = lab.member("cora", "Dataset Curator")
        captioner = lab.member("cap", "Captioner")
        trainer_a = lab.member("tara", "Trainer")
        trainer_b = lab.member("tom", "Trainer")
        testers = [lab.member(f"tess{i}", "Tester") for i in range(3)]

        thread = await open_request(lab, requester)
        card = thread.history()[0]
        assert card.embeds[0].title == "Ticket #1 Aria"
        assert {f.name: f.value for f in card.embeds[0].fields}["Status"] == "DATASET"
        assert [t.name for t in lab.bot.get_channel(thread.id).applied_tags] == ["DATASET"]

        # 20 files: a zip of 14 good images with captions + a duplicate + a corrupt file,
        # then three singles (two good, one duplicate of a zipped image), then a tiny one.
        good = {f"img{i:02d}.png": png(i) for i in range(14)}
        captions = {f"img{i:02d}.txt": f"ar1a, woman, pose {i}".encode() for i in range(14)}
        archive = zip_of({**good, **captions, "copy.png": png(3), "broken.png": b"\x89PNG nope"})
        result = await curator.slash(thread, "dataset upload", file=("set.zip", archive))
        text = followup_text(result)
        assert "**14 of 16 files added**" in text
        assert "✅ set.zip/img00.png (512×640)" in text
        assert "copy.png" in text and "broken.png" in text
        result = await curator.slash(
            thread,
            "dataset upload",
            file=("extra1.png", png(100)),
            file2=("extra2.png", png(101)),
            file3=("again.png", png(5)),
        )
        assert "**2 of 3 files added**" in followup_text(result)
        result = await curator.slash(
            thread, "dataset upload", file=("tiny.png", png(200, (64, 64)))
        )
        assert "❌ " in followup_text(result) and "16 images" in followup_text(result)

        result = await curator.slash(thread, "dataset done")
        assert "captioning is open" in followup_text(result)

        # Two images have no caption yet; finishing is refused with the policy's reason.
        refused = await captioner.slash(thread, "caption done")
        assert "2 of 16 images have no caption yet" in followup_text(refused)
        status = await captioner.slash(thread, "dataset status")
        fields = {f.name: f.value for f in status.response.embeds[0].fields}
        assert fields["Images"] == "16 (14 captioned)"
        in_buckets = [int(part.split()[-1]) for part in fields["Buckets (training)"].split(", ")]
        assert sum(in_buckets) == 16
        listing = status.response.embeds[0].description
        ids = [int(line.split("`")[1]) for line in listing.splitlines() if "extra" in line]
        shown = await captioner.slash(thread, "caption edit", image=ids[0])
        saved = await captioner.submit_modal(shown, {"text": "ar1a, woman, smiling"})
        assert "`ar1a, woman, smiling`" in followup_text(saved)
        txt = zip_of({"extra2.txt": b"woman, sitting"})
        uploaded = await captioner.slash(thread, "caption upload", file=("caps.zip", txt))
        assert "1 captions matched" in followup_text(uploaded)
        refused = await captioner.slash(thread, "caption done")
        assert "do not start with the trigger word" in followup_text(refused)
        bulk = await captioner.slash(thread, "caption bulk", operation="add", tag="ar1a")
        assert "1 captions changed" in followup_text(bulk)
        tags = await captioner.slash(thread, "caption tags")
        assert "`ar1a` 16/16" in followup_text(tags)
        assert "review" in followup_text(await captioner.slash(thread, "caption done"))

        approved = await requester.slash(thread, "dataset approve")
        assert "job-board" in followup_text(approved)
        board = lab.channel("job-board")
        offer = board.last_message
        assert "Claim" in str(offer.components) and "Ready to train" in offer.embeds[0].description

        # Two trainers press Claim at the same moment. simcord runs one interaction at a
        # time, so "the same moment" is: the board still shows Claim to the second one
        # (its edit fails once with a 500), and the compare-and-set decides.
        lab.env.inject_error("PATCH", f"/channels/{board.id}/messages/*", status=500)
        first = await trainer_a.click(offer, label="Claim")
        assert followup_text(first).startswith("You claimed this job")
        assert "Claim" in str(board.last_message.components)  # the edit failed
        second = await trainer_b.click(offer, label="Claim")
        assert followup_text(second) == "This job was already claimed by tara."
        await lab.env.advance_time(lab.bot.relay_interval + 1)  # the relay retries the edit
        winner = trainer_a
        assert "Claimed by **tara**" in board.last_message.embeds[0].description
        assert board.last_message.components == []

        configured = await winner.slash(
            thread, "train config", kind="character", overrides="max_train_epochs=2 network_dim=16"
        )
        assert "sd15-character" in followup_text(configured)
        started = await winner.slash(thread, "train start")
        assert "queued" in followup_text(started)
        assert [t["name"] for t in lab.tasks.sent] == ["loralab.train"]
        job_id = lab.tasks.sent[0]["payload"]["job_id"]

        # Progress: one message, edited in place, never more often than the interval.
        def progress_messages():
            return [m for m in thread.history() if m.content.startswith("**Training job")]

        assert "queued" in progress_messages()[0].content
        report_progress(lab.factory, job_id, 10, 100)
        report_progress(lab.factory, job_id, 20, 100)
        await lab.relay()
        assert "queued" in progress_messages()[0].content  # too soon after the last edit
        await lab.env.advance_time(lab.bot.progress_interval)
        assert len(progress_messages()) == 1
        assert "20%" in progress_messages()[0].content  # one edit, with the newest numbers
        report_progress(lab.factory, job_id, 30, 100)
        await lab.env.advance_time(lab.bot.progress_interval)
        assert len(progress_messages()) == 1
        assert "30%" in progress_messages()[0].content
        edits = [
            r
            for r in lab.env.http_requests
            if r.method == "PATCH" and f"/messages/{progress_messages()[0].id}" in r.path
        ]
        assert len(edits) == 2  # 20% and 30%: never two within progress_interval

        finish_training(lab.factory, lab.storage, job_id, lab.bot.rules)
        await lab.relay()
        assert any("finished" in m.content for m in thread.history())
        grid = next(
            m
            for m in reversed(thread.history())
            if m.embeds and m.embeds[0].title.startswith("Samples")
        )
        assert grid.attachments and grid.attachments[0].filename == "grid.png"
        cross = lab.channel("testing").last_message
        assert cross.embeds[0].title == grid.embeds[0].title

        # Votes: one per member per set; voting again changes, never adds.
        for tester in testers:
            voted = await tester.click(grid, label="Good")
            assert "You voted 👍" in followup_text(voted)
        changed = await testers[0].click(grid, label="Not yet")
        assert "changed your vote to 👎" in followup_text(changed)
        assert "👍 2 · 👎 1" in followup_text(changed)
        again = await testers[0].click(grid, label="Good")
        assert "👍 3 · 👎 0" in followup_text(again)
        await lab.relay()
        for copy in (thread.history(), lab.channel("testing").history()):
            shown = next(m for m in copy if m.embeds and m.embeds[0].title.startswith("Samples"))
            votes = {f.name: f.value for f in shown.embeds[0].fields}["Votes"]
            assert votes == "👍 3 · 👎 0"  # both copies show the tally

        released = await requester.slash(thread, "lora release", epoch=2)
        assert "Released epoch 2" in followup_text(released)
        post = lab.channel("releases").last_message
        fields = {f.name: f.value for f in post.embeds[0].fields}
        assert fields["Trigger word"] == "`ar1a`"
        for person in ("rita", "cora", "cap", winner.name, "tess0", "tess1", "tess2"):
            assert person in fields["Credits"]
        assert post.attachments[0].filename == "ar1a-v1-e2.safetensors"
        final = thread.history()[0]
        assert {f.name: f.value for f in final.embeds[0].fields}["Status"] == "RELEASED"
        tags = lab.bot.get_channel(thread.id).applied_tags
        assert [t.name for t in tags] == ["RELEASED"]  # the forum tag follows the status

"""Smaller features seen from the members' side: auto-unclaim, unexpected errors,
thread attachments, release by link, status/list/iterate, stats and workers."""

from __future__ import annotations

import logging

import pytest

from bot.errors import LabTree
from db.models import Worker
from db.tickets import list_tickets
from lab.lifecycle import TicketState
from lab.settings import LabRules
from tests.bot.conftest import followup_text, ready_ticket, running_lab
from tests.bot.images import png
from tests.bot.matrix_setup import members, ticket_in

pytestmark = pytest.mark.anyio


async def test_an_idle_claim_returns_to_the_board_with_a_notice(tmp_path, template_db):
    rules = LabRules(claim_inactivity_hours=0.5)
    async with running_lab(
        tmp_path, template_db, settings={"rules": rules}, unclaim_interval=60, relay_interval=60
    ) as lab:
        await lab.setup()
        trainer = lab.member("tara", "Trainer")
        thread, _ = await ready_ticket(lab, lab.member("rita"))
        await trainer.click(lab.channel("job-board").last_message, label="Claim")
        assert "Claimed by **tara**" in lab.channel("job-board").last_message.embeds[0].description
        await lab.env.advance_time(20 * 60)
        assert "Claimed by" in lab.channel("job-board").last_message.embeds[0].description
        await lab.env.advance_time(15 * 60)
        notice = [m.content for m in thread.history() if m.content.startswith("⏰")]
        assert notice and "tara had no activity" in notice[0]
        offer = lab.channel("job-board").last_message
        assert "Ready to train" in offer.embeds[0].description
        again = await lab.member("tom", "Trainer").click(offer, label="Claim")
        assert followup_text(again).startswith("You claimed this job")


async def test_an_unexpected_error_shows_an_incident_id(tmp_path, template_db, caplog):
    async with running_lab(tmp_path, template_db, check_errors=False) as lab:
        await lab.setup()
        thread, _ = await ready_ticket(lab, lab.member("rita"))

        def broken(*args, **kwargs):
            raise RuntimeError("database exploded")

        import bot.exts.tickets._cog as tickets_cog

        original = tickets_cog.ticket_card
        tickets_cog.ticket_card = broken
        try:
            with caplog.at_level(logging.ERROR):
                result = await lab.admin.slash(thread, "lora status")
        finally:
            tickets_cog.ticket_card = original
        text = followup_text(result)
        assert result.ephemeral and "Something went wrong on our side (incident `" in text
        incident = text.split("`")[1]
        assert any(incident in r.getMessage() for r in caplog.records)
        assert "database exploded" not in text
        assert isinstance(lab.bot.tree, LabTree)  # the handler came with tree_cls


async def test_images_posted_in_the_thread_are_ingested(tmp_path, template_db):
    settings = {"message_content_intent": True}
    async with running_lab(tmp_path, template_db, settings=settings) as lab:
        await lab.setup()
        curator = lab.member("cora", "Dataset Curator")
        from tests.bot.conftest import open_request

        thread = await open_request(lab, lab.member("rita"))
        await curator.send(thread, "two more", attachments=[("a.png", png(1)), ("b.txt", b"x")])
        reply = thread.last_message
        assert reply.content.startswith("**1 of 1 files added** · the dataset has 1 images.")
        assert "✅ a.png (512×640)" in reply.content
        assert "⚠️ b.txt: no image with this name; caption not used." in reply.content


async def test_a_release_over_the_upload_limit_is_a_link(tmp_path, template_db):
    from tests.bot.matrix_setup import ticket_in as prepare
    from tests.bot.worker_sim import finish_training

    def link(key: str) -> str:
        return f"https://files.example/{key}?sig=abc"

    async with running_lab(tmp_path, template_db, download_link=link) as lab:
        await lab.setup()
        people = members(lab)
        number = prepare(lab, people, TicketState.TRAINING)
        await lab.relay()
        job_id = lab.tasks.sent[-1]["payload"]["job_id"]
        big = b"x" * (lab.bot.settings.upload_limit_bytes + 1)
        finish_training(lab.factory, lab.storage, job_id, lab.bot.rules, lora_bytes=big)
        await lab.relay()
        result = await lab.admin.slash(lab.general, "lora release", ticket=number, epoch=1,
                                       override=True)  # fmt: skip
        assert "Released epoch 1" in followup_text(result)
        post = lab.channel("releases").last_message
        assert not post.attachments
        fields = {f.name: f.value for f in post.embeds[0].fields}
        assert "https://files.example/jobs/" in fields["Download"]


async def test_status_list_iterate_stats_and_workers(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.RELEASED)
        await lab.relay()
        status = await people["tester"].slash(lab.general, "lora status", ticket=number)
        card = status.response.embeds[0]
        assert {f.name: f.value for f in card.fields}["Status"] == "RELEASED"
        listed = await people["requester"].slash(lab.general, "lora list", mine=True)
        assert f"#{number} Aria" in followup_text(listed)
        refused = await people["tester"].slash(lab.general, "lora iterate", ticket=number)
        assert followup_text(refused) == (
            "Only a Lab Admin or the requester may open the next version."
        )
        opened = await people["requester"].slash(lab.general, "lora iterate", ticket=number)
        assert f"#{number + 1} opened as the next version" in followup_text(opened)
        await lab.relay()
        assert lab.channel("lab-requests").threads[-1].name == f"#{number + 1} Aria v2"
        newest = list_tickets(lab.factory, lab.guild.id)[0]
        assert newest.version == 2 and newest.image_count == 16
        stats = await people["nobody"].slash(lab.general, "lora stats")
        assert "requester" in stats.response.embeds[0].description
        with lab.factory.begin() as session:
            session.add(Worker(name="gpu-1", hostname="box", queues=["gpu"], gpu_name="H100",
                               gpu_memory_mb=81920))  # fmt: skip
        workers = await people["nobody"].slash(lab.general, "train workers")
        assert "**gpu-1** · H100 (81920 MB) · queues gpu · idle" in followup_text(workers)


async def test_before_setup_members_are_told_to_run_it(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        member = lab.member_without_lab("newbie")
        result = await member.slash(lab.general, "lora list")
        assert followup_text(result) == (
            "This server has no lab yet. A server admin runs /lab setup first."
        )


async def test_role_picker_buttons_toggle_roles(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        member = lab.member("pat")
        picker = next(m for m in lab.channel("lab-guide").history() if m.components)
        joined = await member.click(picker, label="Tester")
        assert followup_text(joined) == "You are now a Tester."
        left = await member.click(picker, label="Tester")
        assert followup_text(left) == "You left the Tester role."


async def test_requested_changes_are_explained_in_the_post(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.REVIEW)
        await lab.relay()
        asked = await people["requester"].slash(
            lab.general, "dataset request-changes", ticket=number, reason="three blurry shots"
        )
        assert "Changes requested" in followup_text(asked)
        thread = lab.channel("lab-requests").threads[-1]
        assert thread.last_message.content == (
            "**requester** moved this ticket to DATASET: three blurry shots"
        )
        card = {f.name: f.value for f in thread.history()[0].embeds[0].fields}
        assert card["Status"] == "DATASET"


async def test_uploads_only_from_discord_hosts_and_under_the_cap(tmp_path, template_db):
    from lab.dataset.settings import IngestSettings
    from lab.settings import DISCORD_ATTACHMENT_HOSTS

    settings = {"ingest": IngestSettings(max_file_bytes=20_480)}
    async with running_lab(tmp_path, template_db, settings=settings) as lab:
        await lab.setup()
        curator = lab.member("cora", "Dataset Curator")
        from tests.bot.conftest import open_request

        thread = await open_request(lab, lab.member("rita"))
        big, small = png(7, (1024, 1024)), png(8)
        assert len(big) > 20_480 > len(small)
        result = await curator.slash(
            thread, "dataset upload", file=("big.png", big), file2=("ok.png", small)
        )
        text = followup_text(result)
        assert "❌ big.png: " in text and "over the 20 KiB limit for one file." in text
        assert "✅ ok.png" in text
    discord_hosts = {"attachment_hosts": DISCORD_ATTACHMENT_HOSTS}
    async with running_lab(tmp_path / "other", template_db, settings=discord_hosts) as lab:
        await lab.setup()
        thread = await open_request(lab, lab.member("rita"))
        result = await lab.admin.slash(thread, "dataset upload", file=("x.png", png(9)))
        assert "❌ x.png: not a Discord attachment; not fetched." in followup_text(result)
        assert "the dataset has 0 images" in followup_text(result)


async def test_train_config_is_checked_with_the_trainers_model(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        number = ticket_in(lab, people, TicketState.CLAIMED, config=False)
        claimer = people["claimer"]

        async def configure(overrides: str) -> str:
            result = await claimer.slash(
                lab.general, "train config", ticket=number, kind="character", overrides=overrides
            )
            return followup_text(result)

        assert (await configure("max_train_epochs=0")).startswith(
            "That training configuration is not valid: invalid config: max_train_epochs:"
        )
        assert await configure("output_dir=/tmp/x") == (
            "That training configuration is not valid: output_dir is set by the worker for "
            "every run; leave it out."
        )
        assert "unknown key 'bogus'" in await configure("bogus=1")
        refused_start = await claimer.slash(lab.general, "train start", ticket=number)
        assert followup_text(refused_start) == (
            "This job has no valid training configuration yet. Set one with /train config."
        )
        ok = await configure("max_train_epochs=8 learning_rate=2e-4")
        assert "`sd15-character` max_train_epochs=8 learning_rate=0.0002" in ok
        started = await claimer.slash(lab.general, "train start", ticket=number)
        assert "is queued (attempt 1)" in followup_text(started)
        assert lab.tasks.sent[-1]["name"] == "loralab.train"

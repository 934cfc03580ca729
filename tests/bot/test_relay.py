"""The outbox relay: retries on 5xx/429, dead letters, restarts, nothing sent twice."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db import repositories as repo
from db.models import OutboxMessage
from db.outbox import RelayPolicy, pending_count
from tests.bot.conftest import followup_text, open_request, ready_ticket, running_lab

pytestmark = pytest.mark.anyio


def post_notice(lab, ticket_id, text, key):
    with lab.factory.begin() as session:
        repo.add_outbox(
            session,
            repo.OutboxItem("discord.notice", {"ticket_id": ticket_id, "text": text}, key),
        )


def sends_of(lab, thread, text):
    return [
        r
        for r in lab.env.http_requests
        if r.method == "POST"
        and r.path == f"/channels/{thread.id}/messages"
        and (r.json or {}).get("content") == text
    ]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_a_failed_send_is_retried_and_delivered_once(tmp_path, template_db, status):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        thread, ticket_id = await ready_ticket(lab, lab.member("rita"))
        lab.env.inject_error("POST", f"/channels/{thread.id}/messages", status=status, times=2)
        post_notice(lab, ticket_id, "Worker gpu-1 picked up the job.", "notice:test:1")
        await lab.relay()
        assert len(sends_of(lab, thread, "Worker gpu-1 picked up the job.")) == 1  # refused
        await lab.relay()
        await lab.relay()
        shown = [m for m in thread.history() if m.content == "Worker gpu-1 picked up the job."]
        assert len(shown) == 1
        assert len(sends_of(lab, thread, "Worker gpu-1 picked up the job.")) == 3
        assert pending_count(lab.factory, "discord.") == 0


async def test_a_send_that_keeps_failing_becomes_a_dead_letter(tmp_path, template_db):
    policy = RelayPolicy(max_attempts=3, base_delay=0.0)
    async with running_lab(tmp_path, template_db, relay_policy=policy) as lab:
        await lab.setup()
        thread, ticket_id = await ready_ticket(lab, lab.member("rita"))
        lab.env.inject_error("POST", f"/channels/{thread.id}/messages", status=502, times=None)
        post_notice(lab, ticket_id, "never shown", "notice:test:dead")
        for _ in range(5):
            await lab.relay()
        assert len(sends_of(lab, thread, "never shown")) == 3
        with lab.factory() as session:
            row = session.scalar(
                select(OutboxMessage).where(OutboxMessage.idempotency_key == "notice:test:dead")
            )
        assert row.sent_at is None and row.attempts == 3 and "502" in row.last_error
        assert not [m for m in thread.history() if m.content == "never shown"]


async def test_restart_mid_flow_old_buttons_work_and_the_outbox_resumes(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        trainer = lab.member("tara", "Trainer")
        thread, ticket_id = await ready_ticket(lab, lab.member("rita"))
        offer = lab.channel("job-board").last_message
        posts_before = len(lab.channel("lab-requests").threads)

        # Rows written while the bot is down (a worker's notice) wait in the outbox.
        lab.env.inject_error("POST", f"/channels/{thread.id}/messages", status=500)
        post_notice(lab, ticket_id, "Saved while the bot was away.", "notice:restart")
        await lab.relay()
        await lab.restart()
        await lab.relay()

        assert [m.content for m in thread.history()].count("Saved while the bot was away.") == 1
        assert len(lab.channel("lab-requests").threads) == posts_before  # no second post
        assert len(lab.channel("job-board").history()) == 1  # no second offer
        clicked = await trainer.click(offer, label="Claim")  # a button from before the restart
        assert followup_text(clicked).startswith("You claimed this job")
        assert "Claimed by **tara**" in lab.channel("job-board").last_message.embeds[0].description
        assert pending_count(lab.factory, "discord.") == 0


async def test_a_command_has_its_rows_delivered_at_once_through_the_outbox_written_event(
    tmp_path, template_db
):
    """Cogs dispatch `outbox_written` after their transaction and the relay listens to
    it: nothing is patched onto the bot, and the timer (an hour here) is not waited for."""
    async with running_lab(tmp_path, template_db, relay_interval=3600) as lab:
        await lab.setup()
        assert not hasattr(lab.bot, "kick_relay")
        assert lab.bot.extra_events["on_outbox_written"]
        thread = await open_request(lab, lab.member("rita"))  # the relay creates the post
        assert thread.name == "#1 Aria"
        card = lab.channel("lab-requests").threads[-1].history()
        assert card and card[0].embeds


async def test_the_release_post_and_its_thread_notice_each_have_their_own_nonce(
    tmp_path, template_db
):
    """Point 8: one nonce for two sends lets Discord take the second for the first."""
    from lab.lifecycle import TicketState
    from tests.bot.matrix_setup import members, ticket_in

    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        ticket_in(lab, members(lab), TicketState.RELEASED)
        await lab.relay()
        releases, forum = lab.channel("releases"), lab.channel("lab-requests")
        sends = [r for r in lab.env.http_requests if r.method == "POST"]
        post = [r for r in sends if r.path == f"/channels/{releases.id}/messages"]
        thread = forum.threads[-1]
        notice = [
            r
            for r in sends
            if r.path == f"/channels/{thread.id}/messages"
            and "Released in" in ((r.json or {}).get("content") or "")
        ]
        assert len(post) == 1 and len(notice) == 1
        nonces = {post[0].json["nonce"], notice[0].json["nonce"]}
        assert len(nonces) == 2 and None not in nonces


async def test_a_lab_admin_sees_dead_letters_with_their_reason_and_redrives_them(
    tmp_path, template_db
):
    """Dead letters in Discord: `/lab outbox` lists them (with Discord's answer),
    `/lab redrive` sends one again once the cause is fixed."""
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        thread, ticket_id = await ready_ticket(lab, lab.member("rita"))
        lab.env.inject_error(
            "POST", f"/channels/{thread.id}/messages", status=403, code=50013,
            message="Missing Permissions",
        )  # fmt: skip
        post_notice(lab, ticket_id, "Worker gpu-1 picked up the job.", "notice:dead:403")
        await lab.relay()
        listed = followup_text(await lab.admin.slash(lab.general, "lab outbox"))
        (line,) = [x for x in listed.splitlines() if "notice" in x]
        assert f"notice · ticket {ticket_id} · Discord answered 403 (code 50013)" in line
        row_id = int(line.split("`")[1])

        redriven = await lab.admin.slash(lab.general, "lab redrive", id=row_id)
        assert followup_text(redriven) == f"`{row_id}` goes out again now."
        await lab.relay()
        assert thread.last_message.content == "Worker gpu-1 picked up the job."
        again = await lab.admin.slash(lab.general, "lab redrive", id=row_id)
        assert "is not one of this lab's undelivered messages" in followup_text(again)
        assert "Nothing undelivered" in followup_text(
            await lab.admin.slash(lab.general, "lab outbox")
        )

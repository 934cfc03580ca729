"""The relay against discord.py's real HTTP client and a Discord-like server.

What simcord cannot show: connection resets that reach the relay as `aiohttp`
errors, a 5xx after Discord acted (discord.py retries it itself), 429s with
``retry_after``, archived posts that refuse edits (50083), nonces.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from db import repositories as repo
from db.models import OutboxMessage, Ticket
from db.outbox import pending_count
from loralab.cli import main
from tests.bot.boundary import Boundary, boundary_lab

pytestmark = pytest.mark.anyio

THREADS = r"/channels/\d+/threads"


def notice(lab: Boundary, ticket_id: int, text: str, key: str) -> None:
    with lab.factory.begin() as session:
        repo.add_outbox(
            session, repo.OutboxItem("discord.notice", {"ticket_id": ticket_id, "text": text}, key)
        )


def card_refresh(lab: Boundary, ticket_id: int, key: str) -> None:
    with lab.factory.begin() as session:
        repo.add_outbox(
            session, repo.OutboxItem("discord.ticket_card", {"ticket_id": ticket_id}, key)
        )


def ticket_row(lab: Boundary, ticket_id: int) -> Ticket:
    with lab.factory() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket


def outbox_row(lab: Boundary, key: str) -> OutboxMessage:
    with lab.factory() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
        assert row is not None
        return row


def contents(lab: Boundary, thread_id: int) -> list[str]:
    return [m["content"] for m in lab.discord.history(thread_id) if m["content"]]


async def test_the_happy_path_creates_one_post_and_records_it(tmp_path, template_db, monkeypatch):
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        ticket_id = lab.open_ticket()
        await lab.deliver()
        posts = lab.discord.threads_of(lab.forum_id)
        assert len(posts) == 1
        assert ticket_row(lab, ticket_id).forum_thread_id == int(posts[0]["id"])
        assert pending_count(lab.factory, "discord.") == 0


@pytest.mark.parametrize("kind", ["reset_before", "reset_after"])
async def test_a_connection_reset_on_the_forum_post_is_retried(
    tmp_path, template_db, monkeypatch, kind
):
    """Point 1 (and 2 for ``reset_after``): the reset reaches the relay as an aiohttp
    error; it is retried, and a post Discord made before the reset is adopted."""
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        lab.discord.fail("POST", THREADS, kind)
        ticket_id = lab.open_ticket()
        await lab.deliver(passes=3)
        posts = lab.discord.threads_of(lab.forum_id)
        assert len(posts) == 1
        assert ticket_row(lab, ticket_id).forum_thread_id == int(posts[0]["id"])
        assert ticket_row(lab, ticket_id).card_message_id == int(posts[0]["id"])
        assert pending_count(lab.factory, "discord.") == 0


async def test_a_reset_on_a_notice_is_retried_and_shown_once(tmp_path, template_db, monkeypatch):
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        ticket_id = lab.open_ticket()
        await lab.deliver()
        thread_id = ticket_row(lab, ticket_id).forum_thread_id
        lab.discord.fail("POST", rf"/channels/{thread_id}/messages", "reset_after")
        notice(lab, ticket_id, "Worker gpu-1 picked up the job.", "notice:reset")
        await lab.deliver(passes=3)
        assert contents(lab, thread_id) == ["Worker gpu-1 picked up the job."]
        assert pending_count(lab.factory, "discord.") == 0


async def test_a_500_after_discord_made_the_post_gives_one_post(tmp_path, template_db, monkeypatch):
    """Point 2: discord.py retries the 500 itself; the retry must not make a second post."""
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        lab.discord.fail("POST", THREADS, "error_after", status=500)
        ticket_id = lab.open_ticket()
        await lab.deliver(passes=2)
        posts = lab.discord.threads_of(lab.forum_id)
        assert len(posts) == 1
        assert ticket_row(lab, ticket_id).forum_thread_id == int(posts[0]["id"])


async def test_a_lost_post_that_was_archived_since_is_found_and_adopted(
    tmp_path, template_db, monkeypatch
):
    """Point 2: the search covers the forum's archived posts too."""
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        lab.discord.fail("POST", THREADS, "reset_after")
        ticket_id = lab.open_ticket()
        await lab.deliver()
        (post,) = lab.discord.threads_of(lab.forum_id)
        lab.discord.archive(int(post["id"]))
        await lab.deliver(passes=2)
        assert len(lab.discord.threads_of(lab.forum_id)) == 1
        assert ticket_row(lab, ticket_id).forum_thread_id == int(post["id"])


async def test_posts_are_created_with_the_longest_auto_archive(tmp_path, template_db, monkeypatch):
    """Point 3: tickets live for weeks; posts archive as late as Discord allows."""
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        lab.open_ticket()
        await lab.deliver()
        (post,) = lab.discord.threads_of(lab.forum_id)
        assert post["thread_metadata"]["auto_archive_duration"] == 10080


async def test_a_post_archived_for_a_week_gets_its_card_updated(tmp_path, template_db, monkeypatch):
    """Point 3: the edit is refused (50083); the relay unarchives the post and edits."""
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        ticket_id = lab.open_ticket()
        await lab.deliver()
        thread_id = ticket_row(lab, ticket_id).forum_thread_id
        week_ago = (datetime.now(UTC) - timedelta(days=7)).isoformat()
        lab.discord.archive(thread_id, when=week_ago)
        with lab.factory.begin() as session:
            ticket = session.get(Ticket, ticket_id)
            ticket.description = "Now with 24 images."
        card_refresh(lab, ticket_id, "card:after-archive")
        await lab.deliver()
        card = lab.discord.messages[thread_id][thread_id]
        assert card["embeds"][0]["description"] == "Now with 24 images."
        assert lab.discord.channels[thread_id]["thread_metadata"]["archived"] is False
        assert outbox_row(lab, "card:after-archive").sent_at is not None


@pytest.mark.parametrize("via", [True, False], ids=["discord-429", "proxy-429"])
async def test_a_row_postponed_by_429_is_not_passed_by_later_rows_of_its_ticket(
    tmp_path, template_db, monkeypatch, via
):
    """Point 7: rows of one ticket arrive in order; other tickets are not held up.

    ``discord-429`` is Discord's answer (discord.py gives up waiting past
    ``max_ratelimit_timeout`` and raises `RateLimited`); ``proxy-429`` lacks the
    ``Via`` header, so discord.py raises a plain 429 `HTTPException`."""
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        first, other = lab.open_ticket("Aria"), lab.open_ticket("Bram")
        await lab.deliver()
        a = ticket_row(lab, first).forum_thread_id
        b = ticket_row(lab, other).forum_thread_id
        fault = lab.discord.fail("POST", rf"/channels/{a}/messages", "rate_limit", retry_after=40)
        if not via:
            fault.kind = "proxy_rate_limit"
        notice(lab, first, "epoch 1 grid", "n:1")
        notice(lab, first, "epoch 3 grid", "n:2")
        notice(lab, other, "Bram: worker picked up the job.", "n:3")
        notice(lab, first, "training finished", "n:4")
        await lab.deliver(passes=1, step=0)
        assert contents(lab, b) == ["Bram: worker picked up the job."]
        assert contents(lab, a) == []
        lab.advance(39)
        await lab.deliver(passes=1, step=0)
        assert contents(lab, a) == []
        lab.advance(2)
        await lab.deliver(passes=1, step=0)
        assert contents(lab, a) == ["epoch 1 grid", "epoch 3 grid", "training finished"]


async def test_a_global_rate_limit_is_waited_out_and_each_notice_arrives_once(
    tmp_path, template_db, monkeypatch
):
    """discord.py waits out a short global 429 itself (the harness answers it)."""
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        first, other = lab.open_ticket("Aria"), lab.open_ticket("Bram")
        await lab.deliver()
        a = ticket_row(lab, first).forum_thread_id
        b = ticket_row(lab, other).forum_thread_id
        lab.discord.fail(
            "POST", r"/channels/\d+/messages", "rate_limit", retry_after=0.2, global_=True
        )
        notice(lab, first, "one", "g:1")
        notice(lab, other, "two", "g:2")
        await lab.deliver(passes=1, step=0)
        assert (contents(lab, a), contents(lab, b)) == (["one"], ["two"])
        assert len(lab.discord.sent("POST", rf"/channels/{a}/messages")) == 2  # 429, then sent


def cli(lab: Boundary, *args: str) -> tuple[int, str]:
    url = str(lab.factory.kw["bind"].url)
    result = CliRunner().invoke(main, ["outbox", *args], env={"LORALAB_DATABASE_URL": url})
    return result.exit_code, result.output


async def test_a_refusal_that_cannot_succeed_is_a_dead_letter_an_operator_can_redrive(
    tmp_path, template_db, monkeypatch, caplog
):
    """Point 1: a 4xx that can never succeed is given up at once, with its reason in the
    log and in `loralab outbox dead`; once fixed, `loralab outbox redrive` delivers it."""
    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        lab.discord.fail(
            "POST", THREADS, "error_before", status=403, code=50013, message="Missing Permissions"
        )
        ticket_id = lab.open_ticket()
        await lab.deliver(passes=3)
        assert lab.discord.sent("POST", THREADS) and len(lab.discord.sent("POST", THREADS)) == 1
        assert "Discord answered 403 (code 50013): Missing Permissions" in caplog.text
        code, listed = cli(lab, "dead")
        assert code == 0
        (line,) = listed.splitlines()
        row_id = line.split("\t")[0]
        assert f"discord.ticket_post\tticket {ticket_id}\t" in line
        assert line.endswith("Discord answered 403 (code 50013): Missing Permissions")

        code, output = cli(lab, "redrive", row_id)  # the admin granted the permission
        assert (code, output.strip()) == (0, f"Re-driven: {row_id}.")
        await lab.deliver()
        assert ticket_row(lab, ticket_id).forum_thread_id is not None
        assert cli(lab, "dead") == (0, "No dead letters.\n")
        code, output = cli(lab, "redrive", row_id)  # delivered: nothing to re-drive
        assert (
            code == 1
            and f"Not dead letters (delivered, still pending or unknown): {row_id}." in output
        )


async def test_lost_connections_and_timeouts_are_retried_unknown_errors_are_not():
    """Point 1: on Linux a reset reaches the relay as aiohttp/OSError/TimeoutError."""

    import aiohttp

    from bot.exts.relay._logic import classify

    for error in (
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
    ):
        assert classify(error).retry, error
    verdict = classify(KeyError("forum_thread_id"))
    assert not verdict.retry and verdict.bug and "KeyError" in verdict.reason


async def test_a_board_offer_lost_after_its_nonce_expired_is_adopted_not_repeated(
    tmp_path, template_db, monkeypatch
):
    """Point 2 for messages: a nonce dedupes for minutes only; a send retried later
    (a crash, a long backoff) finds its message by the ticket's footer instead."""
    from db.dataset import NewImage, add_images
    from db.tickets import Who, act
    from lab.lifecycle import Action, LabRole
    from tests.bot.discord_server import GUILD_ID

    async with boundary_lab(tmp_path, template_db, monkeypatch) as lab:
        ticket_id = lab.open_ticket()
        await lab.deliver()
        who = Who(GUILD_ID, 42, "rita", frozenset({LabRole.CURATOR}), "Boundary Lab")
        images = [
            NewImage(f"i{i}.png", f"{i:064x}", f"{i * 7919:016x}", 512, 640, 1000, f"k/{i}.png",
                     caption=f"ar1a, woman, pose {i}")
            for i in range(16)
        ]  # fmt: skip
        add_images(lab.factory, who, ticket_id, images, lab.bot.rules)
        for action in (Action.FINISH_DATASET, Action.FINISH_CAPTIONS, Action.APPROVE):
            act(lab.factory, who, ticket_id, action, lab.bot.rules)
        board = lab.channels["job_board"]
        lab.discord.nonce_window = 0
        lab.discord.fail("POST", rf"/channels/{board}/messages", "reset_after")
        await lab.deliver(passes=3)
        (offer,) = lab.discord.history(board)
        assert ticket_row(lab, ticket_id).board_message_id == int(offer["id"])
        assert offer["components"]  # the Claim button is on the adopted message

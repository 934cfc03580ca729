"""One renderer per outbox kind: what a row becomes in Discord.

Each is idempotent: a post that already exists (its id is recorded on the row it
belongs to) is edited rather than sent again, so a row delivered twice after a crash
shows up once.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import discord

from bot import embeds
from bot.context import LabConfig, lab_config
from bot.exts.jobs._views import ClaimButton
from bot.exts.relay._adopt import (
    CLOCK_SKEW,
    LONGEST_AUTO_ARCHIVE,
    Post,
    in_post,
    keep_oldest,
    posts_for,
    sent_before,
)
from bot.exts.testing._views import vote_view
from db.outbox import PendingRow, RetryableDeliveryError
from db.tickets import TicketCard, record_messages, ticket_card
from db.training import (
    JobView,
    ReleaseView,
    job_view,
    record_progress_message,
    release_view,
)
from db.voting import record_sample_message, sample_set_view, ticket_sample_sets
from lab.apps import compat_filename, needs_dora_compat
from lab.lifecycle import TicketState
from lab.tasks import OutboxKind

if TYPE_CHECKING:
    from bot.app import LabBot

log = logging.getLogger(__name__)
T = TypeVar("T")
# Grids posted during training get live buttons: testing opens when the run ends.
_VOTING_STATES = frozenset({TicketState.TRAINING, TicketState.TESTING})


def nonce_for(key: str) -> str:
    """Discord nonces are at most 25 characters: a digest of the idempotency key."""
    return hashlib.sha256(key.encode()).hexdigest()[:25]


def _ping(card: TicketCard) -> str:
    """The claiming trainer's mention: their job finished or failed, they act next."""
    return f"<@{card.claimer_user_id}> " if card.claimer_user_id else ""


def _ping_only(card: TicketCard) -> discord.AllowedMentions:
    """Exactly the claiming trainer may be notified by this message, by id."""
    users = [discord.Object(card.claimer_user_id)] if card.claimer_user_id else []
    return discord.AllowedMentions(everyone=False, users=users, roles=False, replied_user=False)


class Renderer:
    def __init__(self, bot: LabBot) -> None:
        self.bot = bot
        self._last_progress: dict[int, float] = {}
        self._flushes: dict[int, asyncio.Task[None]] = {}
        self._kinds: dict[str, Callable[[PendingRow], Awaitable[None]]] = {
            OutboxKind.TICKET_POST.value: self.ticket_post,
            OutboxKind.TICKET_CARD.value: self.ticket_card,
            OutboxKind.JOB_PROGRESS.value: self.job_progress,
            OutboxKind.SAMPLE_GRID.value: self.sample_grid,
            OutboxKind.JOB_FINISHED.value: self.job_finished,
            OutboxKind.JOB_FAILED.value: self.job_failed,
            OutboxKind.NOTICE.value: self.notice,
            OutboxKind.JOB_BOARD.value: self.job_board,
            OutboxKind.RELEASE.value: self.release,
            OutboxKind.SAMPLE_TALLY.value: self.sample_tally,
            OutboxKind.CLOSE_VOTING.value: self.close_voting,
        }

    def close(self) -> None:
        for task in self._flushes.values():
            task.cancel()

    async def __call__(self, row: PendingRow) -> None:
        handler = self._kinds.get(row.kind)
        if handler is None:
            raise ValueError(f"no renderer for outbox kind {row.kind!r}")
        await handler(row)

    # --- helpers ---------------------------------------------------------------------

    @property
    def _me(self) -> int:
        return self.bot.user.id if self.bot.user else 0

    async def _config(self, guild_id: int) -> LabConfig:
        config = await lab_config(self.bot, guild_id)
        if not config.ready:
            raise RetryableDeliveryError("the lab is not set up yet", retry_after=60)
        return config

    async def _channel(self, channel_id: int) -> Any:
        channel = self.bot.get_channel(channel_id)
        if channel is None:
            channel = await self.bot.fetch_channel(channel_id)
        return channel

    async def _card(self, ticket_id: int) -> TicketCard:
        return await self.bot.db.run(ticket_card, ticket_id)

    async def _thread(self, card: TicketCard) -> discord.Thread:
        if card.forum_thread_id is None:
            raise RetryableDeliveryError(f"ticket {card.id} has no forum post yet")
        return await self._channel(card.forum_thread_id)

    async def _say(self, card: TicketCard, row: PendingRow, **kwargs: Any) -> discord.Message:
        thread = await self._thread(card)
        return await thread.send(nonce=nonce_for(row.idempotency_key), **kwargs)

    async def _tags(self, config: LabConfig, card: TicketCard) -> list[discord.ForumTag]:
        forum = await self._channel(config.channel_id("requests") or 0)
        tag = forum.get_tag(config.tag_id(card.status.value) or 0)
        return [tag] if tag else []

    # --- tickets ---------------------------------------------------------------------

    async def ticket_post(self, row: PendingRow) -> None:
        """Forum posts take no nonce, and discord.py retries a 5xx itself: a post whose
        answer was lost (reset, 5xx after Discord made it, crash) is found and adopted
        rather than made twice."""
        card = await self._card(row.payload["ticket_id"])
        if card.forum_thread_id is not None:
            return
        config = await self._config(card.guild_id)
        forum = await self._channel(config.channel_id("requests") or 0)
        since = row.created_at - CLOCK_SKEW if row.created_at else None
        me = self._me
        found = await posts_for(forum, me, card, since=since)
        if found:
            log.info("ticket %s: adopting its forum post %s", card.id, found[0].thread.id)
        else:
            created = await forum.create_thread(
                name=embeds.ticket_title(card),
                embed=embeds.ticket_card_embed(card),
                applied_tags=await self._tags(config, card),
                auto_archive_duration=LONGEST_AUTO_ARCHIVE,
            )
            # discord.py retries a 5xx itself: if Discord had made the post before
            # answering 500, the retry made a second one. A fresh post is still active.
            found = await posts_for(forum, me, card, since=since, archived=False)
            found = found or [Post(created.thread, created.message.id)]
        post = await keep_oldest(found, card.id)
        await self.bot.db.run(
            record_messages,
            card.id,
            forum_thread_id=post.thread.id,
            card_message_id=post.card_message_id,
        )

    async def ticket_card(self, row: PendingRow) -> None:
        card = await self._card(row.payload["ticket_id"])
        thread = await self._thread(card)
        config = await self._config(card.guild_id)
        assert card.card_message_id is not None
        message = thread.get_partial_message(card.card_message_id)
        await in_post(thread, lambda: message.edit(embed=embeds.ticket_card_embed(card)))
        tags = await self._tags(config, card)
        if [t.id for t in tags] != [t.id for t in thread.applied_tags]:
            await in_post(thread, lambda: thread.edit(applied_tags=tags))

    async def job_board(self, row: PendingRow) -> None:
        card = await self._card(row.payload["ticket_id"])
        config = await self._config(card.guild_id)
        board = await self._channel(config.channel_id("job_board") or 0)
        offered = card.status is TicketState.READY and card.job_id is not None
        view = discord.ui.View(timeout=None)
        if offered:
            view.add_item(ClaimButton(card.job_id or 0))
        if card.board_message_id is None:
            if not offered:
                return
            message = await sent_before(board, self._me, embeds.card_marker(card.id))
            if message is None:
                message = await board.send(
                    embed=embeds.board_embed(card), view=view, nonce=nonce_for(row.idempotency_key)
                )
            else:
                await message.edit(embed=embeds.board_embed(card), view=view)
            await self.bot.db.run(record_messages, card.id, board_message_id=message.id)
            return
        await board.get_partial_message(card.board_message_id).edit(
            embed=embeds.board_embed(card), view=view
        )

    async def notice(self, row: PendingRow) -> None:
        card = await self._card(row.payload["ticket_id"])
        # Notices carry member text (a request-changes reason, a model name).
        await self._say(card, row, content=embeds.clip(embeds.plain(row.payload["text"]), 2000))

    async def release(self, row: PendingRow) -> None:
        card = await self._card(row.payload["ticket_id"])
        if card.release_message_id is not None:
            return
        config = await self._config(card.guild_id)
        channel = await self._channel(config.channel_id("releases") or 0)
        message = await sent_before(channel, self._me, embeds.card_marker(card.id))
        if message is None:
            message = await self._release_post(row, card, channel)
        await self.bot.db.run(record_messages, card.id, release_message_id=message.id)
        thread = await self._thread(card)
        await thread.send(
            f"Released in {channel.mention}: {message.jump_url}",
            nonce=nonce_for(f"{row.idempotency_key}:notice"),
        )

    async def _release_post(
        self, row: PendingRow, card: TicketCard, channel: discord.TextChannel
    ) -> discord.Message:
        view = await self.bot.db.run(release_view, card.id)
        files: list[discord.File] = []
        link = None
        dora = await self._dora_release(view) if view.dora else None
        if view.lora_key and self.bot.storage is not None:
            room = self.bot.settings.upload_limit_bytes
            if dora is not None and dora.compat is not None:
                files.append(discord.File(io.BytesIO(dora.compat), filename=dora.compat_name))
                room -= len(dora.compat)
            if view.lora_size <= room:
                data = await self.bot.io.run(self.bot.storage.get_bytes, view.lora_key)
                files.append(discord.File(io.BytesIO(data), filename=view.filename))
            else:
                link = self.bot.download_link(view.lora_key)
        embed = embeds.release_embed(card, view, link=link, dora=dora)
        # Two sends, two nonces: one nonce for both would make Discord (or a retry)
        # take the thread notice for the release post.
        kwargs: dict[str, Any] = {"embed": embed, "nonce": nonce_for(f"{row.idempotency_key}:post")}
        if files:
            kwargs["files"] = files
        return await channel.send(**kwargs)

    async def _dora_release(self, view: ReleaseView) -> embeds.DoraRelease:
        """A DoRA model: what the lab's apps do with it, and the plain-LoRA fit to attach
        first when one of them applies DoRA wrongly (and the fit fits the upload)."""
        apps = self.bot.rules.release_apps
        compat = None
        storage, key = self.bot.storage, view.compat_key
        # The fit is absent when the worker wrote none (dora_compat_rank = 0, older runs).
        if (
            needs_dora_compat(apps)
            and storage is not None
            and key is not None
            and await self.bot.io.run(storage.exists, key)
        ):
            data = await self.bot.io.run(storage.get_bytes, key)
            compat = data if len(data) <= self.bot.settings.upload_limit_bytes else None
        return embeds.DoraRelease(apps, compat, compat_filename(view.filename))

    # --- training --------------------------------------------------------------------

    async def _progress_message(self, job: JobView, card: TicketCard) -> None:
        thread = await self._thread(card)
        text = embeds.progress_text(job.id, job.status, job.progress)
        if job.progress_message_id is None:
            message = await thread.send(text, nonce=nonce_for(f"progress:{job.id}"))
            await self.bot.db.run(record_progress_message, job.id, message.id)
        else:
            message = thread.get_partial_message(job.progress_message_id)
            await in_post(thread, lambda: message.edit(content=text))
        self._last_progress[job.id] = asyncio.get_running_loop().time()

    async def job_progress(self, row: PendingRow) -> None:
        """Edits are coalesced: at most one per `progress_interval` per job; a row that
        arrives sooner schedules one edit at the end of the interval, which shows the
        newest progress then."""
        job_id = int(row.payload["job_id"])
        last = self._last_progress.get(job_id)
        now = asyncio.get_running_loop().time()
        if last is None or now - last >= self.bot.progress_interval:
            await self._render_progress(job_id)
            return
        if job_id not in self._flushes or self._flushes[job_id].done():
            delay = self.bot.progress_interval - (now - last)
            self._flushes[job_id] = asyncio.get_running_loop().create_task(
                self._flush_later(job_id, delay)
            )

    async def _render_progress(self, job_id: int) -> None:
        job = await self.bot.db.run(job_view, job_id)
        card = await self._card(job.ticket_id)
        await self._progress_message(job, card)

    async def _flush_later(self, job_id: int, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self._render_progress(job_id)
        except discord.HTTPException:
            log.warning("progress edit for job %s failed; the next update retries", job_id)

    async def job_finished(self, row: PendingRow) -> None:
        job = await self.bot.db.run(job_view, int(row.payload["job_id"]))
        card = await self._card(job.ticket_id)
        await self._progress_message(job, card)
        epochs = ", ".join(str(e) for e in job.lora_epochs) or "none"
        await self._say(
            card,
            row,
            content=f"{_ping(card)}✅ Training job {job.id} finished. Saved epochs: {epochs}. "
            "Testers: vote on the sample grids; then the requester runs "
            "/lora release epoch:<n>.",
            allowed_mentions=_ping_only(card),
        )

    async def job_failed(self, row: PendingRow) -> None:
        job = await self.bot.db.run(job_view, int(row.payload["job_id"]))
        card = await self._card(job.ticket_id)
        await self._progress_message(job, card)
        await self._say(
            card,
            row,
            content=embeds.clip(
                f"{_ping(card)}❌ Training job {job.id} failed: "
                f"{embeds.plain(job.error or 'no reason given')}"
                "\nThe trainer can change /train config and /train retry.",
                2000,
            ),
            allowed_mentions=_ping_only(card),
        )

    async def sample_grid(self, row: PendingRow) -> None:
        sample = await self.bot.db.run(sample_set_view, int(row.payload["sample_set_id"]))
        card = await self._card(sample.ticket_id)
        if sample.message_id is not None:
            return
        config = await self._config(card.guild_id)
        data = b""
        if sample.grid_key and self.bot.storage is not None:
            data = await self.bot.io.run(self.bot.storage.get_bytes, sample.grid_key)
            if len(data) > self.bot.settings.upload_limit_bytes:
                log.warning("sample grid %s is too big to attach; posted without it", sample.id)
                data = b""
        embed = embeds.sample_embed(card, sample)
        sent: list[discord.Message] = []
        targets = [await self._thread(card)]
        if (testing := config.channel_id("testing")) is not None:
            targets.append(await self._channel(testing))
        for target in targets:
            # If the first copy went out and the second failed, the retry finds the first.
            if (
                earlier := await sent_before(target, self._me, embed.footer.text or "")
            ) is not None:
                sent.append(earlier)
                continue
            # A grid that arrives after the ticket left TESTING is posted closed.
            closed = card.status not in _VOTING_STATES
            kwargs: dict[str, Any] = {"embed": embed, "view": vote_view(sample.id, closed=closed)}
            if data:
                kwargs["file"] = discord.File(io.BytesIO(data), filename="grid.png")
                embed.set_image(url="attachment://grid.png")
            sent.append(
                await target.send(nonce=nonce_for(f"{row.idempotency_key}:{target.id}"), **kwargs)
            )
        await self.bot.db.run(
            record_sample_message, sample.id, sent[0].id, sent[1].id if len(sent) > 1 else None
        )

    async def _grid_copies(self, card: TicketCard, sample: Any) -> list[tuple[int, int]]:
        """(channel id, message id) of each posted copy of a grid: the post and #testing."""
        config = await self._config(card.guild_id)
        copies = [
            (card.forum_thread_id, sample.message_id),
            (config.channel_id("testing"), sample.testing_message_id),
        ]
        return [(c, m) for c, m in copies if c is not None and m is not None]

    async def sample_tally(self, row: PendingRow) -> None:
        """Both copies of a grid show the current tally (whichever copy was voted on)."""
        sample = await self.bot.db.run(sample_set_view, int(row.payload["sample_set_id"]))
        card = await self._card(sample.ticket_id)
        for channel_id, message_id in await self._grid_copies(card, sample):
            channel = await self._channel(channel_id)
            message = await channel.fetch_message(message_id)
            if not message.embeds:
                continue
            embed = embeds.with_tally(message.embeds[0], sample.up, sample.down)
            await in_post(channel, lambda m=message, e=embed: m.edit(embed=e))

    async def close_voting(self, row: PendingRow) -> None:
        """The ticket left TESTING: every grid of it, on both copies, shows its vote
        buttons disabled (a click that beats the edit is refused by the policy)."""
        card = await self._card(row.payload["ticket_id"])
        for sample in await self.bot.db.run(ticket_sample_sets, card.id):
            for channel_id, message_id in await self._grid_copies(card, sample):
                channel = await self._channel(channel_id)
                message = channel.get_partial_message(message_id)
                view = vote_view(sample.id, closed=True)
                try:
                    await in_post(channel, lambda m=message, v=view: m.edit(view=v))
                except discord.NotFound:  # a deleted grid has no buttons left to close
                    log.info("sample grid message %s is gone; nothing to close", message_id)

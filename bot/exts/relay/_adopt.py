"""What Discord already has: finding the post or message a lost answer hid, and
working in posts Discord archived.

Forum posts take no nonce, and a nonce only dedupes sends for a few minutes; so the
card, board offer and release post carry the ticket's marker (``ticket:{id}``) in
their footer, and before making one the relay looks for it. Tickets live for weeks:
posts are made with the longest auto-archive, and edits in an archived post
unarchive it first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import discord

from bot import embeds
from bot.exts.relay._logic import THREAD_ARCHIVED
from db.tickets import TicketCard

log = logging.getLogger(__name__)
T = TypeVar("T")

LONGEST_AUTO_ARCHIVE = 10080
"""Minutes (a week): tickets live for weeks, so posts archive as late as Discord lets
them; nothing here depends on a post staying active (`in_post` unarchives)."""
CLOCK_SKEW = timedelta(minutes=10)
"""Slack between our clock (when a row was written) and Discord's archive stamps."""


async def in_post(channel: Any, edit: Callable[[], Awaitable[T]]) -> T:
    """Run `edit` in `channel`; a thread Discord archived is unarchived first (edits in
    an archived thread are refused with 50083, sends unarchive it by themselves)."""
    if not isinstance(channel, discord.Thread):
        return await edit()
    if channel.archived:
        await channel.edit(archived=False)
    try:
        return await edit()
    except discord.HTTPException as exc:
        if exc.code != THREAD_ARCHIVED:
            raise
        await channel.edit(archived=False)  # archived since we looked
        return await edit()


@dataclass(frozen=True, slots=True)
class Post:
    thread: discord.Thread
    card_message_id: int


async def posts_for(
    forum: discord.ForumChannel,
    owner_id: int,
    card: TicketCard,
    *,
    since: datetime | None,
    archived: bool = True,
) -> list[Post]:
    """The posts the bot already made for this ticket (their starter message carries
    the card's ``ticket:{id}`` footer), oldest first: among the forum's active posts
    and, with `archived`, those archived since `since` (older ones predate the row)."""
    candidates = [t for t in await forum.guild.active_threads() if t.parent_id == forum.id]
    if archived:
        async for thread in forum.archived_threads(limit=None):
            if since is not None and thread.archive_timestamp < since:
                break
            candidates.append(thread)
    title = embeds.ticket_title(card)
    found: dict[int, Post] = {}
    for thread in candidates:
        if thread.owner_id != owner_id or thread.name != title or thread.id in found:
            continue
        starter = await _starter(thread)
        if (
            starter
            and starter.embeds
            and starter.embeds[0].footer.text == embeds.card_marker(card.id)
        ):
            found[thread.id] = Post(thread, starter.id)
    return [found[i] for i in sorted(found)]


async def _starter(thread: discord.Thread) -> discord.Message | None:
    """A forum post's first message (on Discord its id is the post's id)."""
    try:
        return await thread.fetch_message(thread.id)
    except discord.NotFound:
        async for message in thread.history(limit=1, oldest_first=True):
            return message
    return None


async def sent_before(
    channel: discord.abc.Messageable, owner_id: int, marker: str, *, limit: int = 50
) -> discord.Message | None:
    """A message the bot already sent here with `marker` as its embed's footer: a send
    whose answer was lost after the nonce's few minutes (a crash, a long backoff)."""
    async for message in channel.history(limit=limit):
        if (
            message.author.id == owner_id
            and message.embeds
            and message.embeds[0].footer.text == marker
        ):
            return message
    return None


async def keep_oldest(posts: list[Post], ticket_id: int) -> Post:
    """The oldest of `posts` stays the ticket's post; the others are deleted."""
    for extra in posts[1:]:
        log.warning("ticket %s: deleting duplicate forum post %s", ticket_id, extra.thread.id)
        try:
            await extra.thread.delete()
        except discord.Forbidden:
            log.warning("ticket %s: may not delete post %s", ticket_id, extra.thread.id)
    return posts[0]

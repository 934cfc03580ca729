"""Delivers outbox rows: ``discord.*`` rows rendered into messages, ``task`` rows sent
to Celery through the injected `TaskSender`.

At least once: a row is marked sent only after its side effect succeeded; renderers
are idempotent (a post that exists is edited, not sent again; a forum post whose
answer was lost is found and adopted; sends carry the row's idempotency key as their
nonce). What `_logic.classify` calls retryable (5xx, 429 honouring ``retry_after``,
lost connections) is retried with the outbox policy's backoff; the rest, and rows
out of attempts, become dead letters with their reason (``loralab outbox dead``).
A ticket's rows are delivered in order: one that is postponed holds back the later
rows of its ticket, not those of other tickets. The relay runs on a timer and
whenever a command reports new rows, and after a restart it picks up the rows still
pending. Cogs never call the relay: they dispatch the ``outbox_written`` event, which
the relay listens to.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from discord.ext import commands, tasks

from bot.exts.relay._logic import classify
from bot.exts.relay._render import Renderer
from db.outbox import PendingRow, RelayPolicy, due_rows, mark_failed, mark_sent
from lab.tasks import OutboxKind

if TYPE_CHECKING:
    from bot.app import LabBot

log = logging.getLogger(__name__)


class Relay(commands.Cog):
    """Owns the delivery loop; `kick()` asks for a pass as soon as possible."""

    def __init__(self, bot: LabBot) -> None:
        self.bot = bot
        self.policy: RelayPolicy = bot.relay_policy
        self.render = Renderer(bot)
        self._lock = asyncio.Lock()
        self._again = False
        self._kicks: set[asyncio.Task[int]] = set()
        self._timer = tasks.loop(seconds=bot.relay_interval)(self._tick)

    async def cog_load(self) -> None:
        self._timer.start()

    async def cog_unload(self) -> None:
        self._timer.cancel()
        self.render.close()

    async def _tick(self) -> None:
        await self.bot.wait_until_ready()
        await self.deliver()

    @commands.Cog.listener()
    async def on_outbox_written(self) -> None:
        """A command's transaction wrote outbox rows (`bot.components.outbox_written`)."""
        self.kick()

    def kick(self) -> None:
        """Deliver soon (after the current pass, if one is running)."""
        if self._lock.locked():
            self._again = True
            return
        task = asyncio.get_running_loop().create_task(self.deliver(), name="relay-kick")
        self._kicks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._kicks.discard)

    async def deliver(self) -> int:
        """One pass over everything due; returns how many rows were delivered."""
        sent = 0
        async with self._lock:
            while True:
                self._again = False
                for prefix in ("discord.", OutboxKind.TASK.value):
                    rows = await self.bot.db.run(
                        due_rows, prefix, self.policy, now=self.bot.clock()
                    )
                    held: set[int] = set()  # tickets with a row postponed in this pass
                    for row in rows:
                        if row.ticket_id in held:
                            continue
                        delivered = await self._deliver_one(row)
                        sent += delivered
                        if not delivered and row.ticket_id is not None:
                            held.add(row.ticket_id)
                if not self._again:
                    break
        return sent

    async def _deliver_one(self, row: PendingRow) -> int:
        try:
            await self._side_effect(row)
        except Exception as exc:
            verdict = classify(exc)
            if verdict.bug:
                log.exception("outbox %s (%s) failed", row.id, row.kind)
            await self._failed(
                row,
                verdict.reason,
                verdict.retry_after,
                dead=not verdict.retry,
                outage=verdict.outage,
            )
            return 0
        await self.bot.db.run(mark_sent, row.id)
        return 1

    async def _side_effect(self, row: PendingRow) -> None:
        if row.kind == OutboxKind.TASK.value:
            payload = row.payload
            await self.bot.io.run(
                self.bot.task_sender.send,
                payload["name"],
                payload["payload"],
                task_id=payload["task_id"],
                queue=payload["queue"],
            )
            return
        await self.render(row)

    async def _failed(
        self,
        row: PendingRow,
        reason: str,
        retry_after: float | None,
        *,
        dead: bool,
        outage: bool = False,
    ) -> None:
        if dead:
            attempts = self.policy.max_attempts
        else:
            attempts = self.policy.attempts_after(row.attempts, outage=outage)
        wait = 0.0 if dead else self.policy.delay(attempts, retry_after)
        dead = attempts >= self.policy.max_attempts
        if dead:
            log.error("outbox %s (%s) dead-lettered: %s", row.id, row.kind, reason)
        else:
            log.warning(
                "outbox %s (%s) retry %d in %.1fs: %s", row.id, row.kind, attempts, wait, reason
            )
        await self.bot.db.run(
            mark_failed,
            row.id,
            attempts=attempts,
            error=reason,
            wait=wait,
            now=self.bot.clock(),
            dead=dead,
        )

"""The simulated guild the story plays in: simcord's world, the real bot, the lab's
database, the worker process, and helpers the script uses to act and to wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import discord
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Artifact, ArtifactKind, JobStatus, Ticket, TrainingJob
from loralab.demo.lab import WorkerProcess
from loralab.demo.transcript import Transcript

ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class DemoError(Exception):
    """The story could not go on; the message says where and why."""


@dataclass
class Member:
    """A scripted member: the simcord actor and the role they play in the story."""

    actor: Any
    role: str

    @property
    def name(self) -> str:
        return self.actor.name


@dataclass
class World:
    env: Any
    bot: Any
    guild: Any
    factory: sessionmaker[Session]
    transcript: Transcript
    worker: WorkerProcess | None
    members: dict[str, Member] = field(default_factory=dict)
    general: Any = None
    tick_seconds: float = 0.25
    """Real time between two passes of the simulated clock while waiting on the worker."""

    def channel(self, name: str) -> Any:
        return self.guild.channels[name]

    def add_member(self, name: str, role: str, *, granted: tuple[str, ...] = ()) -> Member:
        """A new member; `granted`: Discord roles a Lab Admin gave them (approval-only
        roles such as Trainer, which members cannot take themselves)."""
        handles = [self.guild.roles[r] for r in granted]
        member = Member(self.guild.add_member(self.env.create_user(name), roles=handles), role)
        self.members[name] = member
        return member

    async def slash(self, member: Member, where: Any, command: str, **options: Any) -> str:
        """`member` runs ``/command`` in `where`; the reply goes into the transcript."""
        shown = " ".join(f"{k}:{_short(v)}" for k, v in options.items())
        result = await member.actor.slash(where, command, **options)
        return self.transcript.step(member.name, member.role, f"/{command} {shown}", result)

    async def modal(
        self, member: Member, where: Any, command: str, fields: dict[str, str], **options: Any
    ) -> str:
        """A slash command that opens a form, then the form filled with `fields`."""
        shown = await member.actor.slash(where, command, **options)
        if shown.modal is None:
            reply = self.transcript.step(member.name, member.role, f"/{command}", shown)
            raise DemoError(f"/{command} opened no form: {reply}")
        result = await member.actor.submit_modal(shown, fields)
        filled = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        args = " ".join(f"{k}:{v}" for k, v in options.items())
        action = f"/{command} {args} → form “{_title(shown.modal)}” {filled}"
        return self.transcript.step(member.name, member.role, action, result)

    async def click(self, member: Member, message: discord.Message, label: str) -> str:
        result = await member.actor.click(message, label=label)
        where = _where(message)
        return self.transcript.step(
            member.name, member.role, f"clicks [{label}] in {where}", result
        )

    async def relay(self, seconds: float | None = None) -> None:
        """Let the simulated clock run: the bot's relay delivers what is due."""
        await self.env.advance_time(seconds or self.bot.relay_interval)

    def query(self, read: Callable[[Session], Any]) -> Any:
        with self.factory() as session:
            return read(session)

    async def wait_until(
        self, check: Callable[[], Any], *, timeout: float, what: str, on_tick: Any = None
    ) -> Any:
        """Run the simulated clock (so the relay delivers) until `check()` is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if self.worker is not None and not self.worker.alive():
                raise DemoError(
                    f"the worker exited while waiting for {what}:\n{self.worker.tail()}"
                )
            if time.monotonic() > deadline:
                tail = self.worker.tail() if self.worker is not None else ""
                raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
            await asyncio.sleep(self.tick_seconds)
            await self.relay()
            if on_tick is not None:
                on_tick()

    # Reading the lab's rows (what the worker wrote) -------------------------------

    def ticket(self, ticket_id: int) -> Ticket:
        return self.query(lambda s: s.get(Ticket, ticket_id))

    def latest_job(self, ticket_id: int) -> TrainingJob | None:
        query = (
            select(TrainingJob)
            .where(TrainingJob.ticket_id == ticket_id)
            .order_by(TrainingJob.id.desc())
        )
        return self.query(lambda s: s.scalars(query).first())

    def artifacts(self, job_id: int, kind: ArtifactKind) -> list[Artifact]:
        query = select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == kind)
        return self.query(lambda s: list(s.scalars(query.order_by(Artifact.epoch, Artifact.id))))


def samples_messages(channel: Any) -> list[discord.Message]:
    """The sample-grid posts in a channel or thread, oldest first."""
    return [
        m for m in channel.history() if m.embeds and (m.embeds[0].title or "").startswith("Samples")
    ]


def _where(message: discord.Message) -> str:
    channel = message.channel
    name = getattr(channel, "name", None)
    if not name:
        return "the channel"
    return f"the post “{name}”" if getattr(channel, "parent", None) else f"#{name}"


def _title(modal: Any) -> str:
    return modal.get("title", "") if isinstance(modal, dict) else getattr(modal, "title", "")


def _short(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], bytes):
        return f"{value[0]} ({len(value[1]) // 1024} KiB)"
    return str(value)

"""The demo's transcript: who did what, what the bot answered, how long each phase took.

Each line goes to the terminal as it happens (and to ``transcript.txt``); each step is
also kept as a `Step` so the HTML report can show every member's replies by role.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

REPLY_LINES = 8
"""Bot replies longer than this many lines are shortened in the terminal."""


@dataclass(slots=True)
class Step:
    """One member action and what the bot answered."""

    phase: str
    at: float
    actor: str
    role: str
    action: str
    reply: str
    embeds: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Phase:
    name: str
    seconds: float


def reply_of(result: Any) -> tuple[str, list[dict[str, Any]]]:
    """The text and embeds a member read in answer to an interaction (the last
    follow-up, else the response; a modal when one was opened)."""
    message = None
    if getattr(result, "followups", None):
        message = result.followups[-1]
    elif getattr(result, "response", None) is not None:
        message = result.response
    if message is None:
        modal = getattr(result, "modal", None)
        if modal is None:
            return "", []
        title = modal.get("title") if isinstance(modal, dict) else getattr(modal, "title", "")
        return f"(a form opens: {title})", []
    return message.content or "", [embed.to_dict() for embed in message.embeds]


class Transcript:
    """Prints steps as they happen and remembers them with their phase timings."""

    def __init__(self, echo: Callable[[str], None] = click.echo, file: TextIO | None = None):
        self._echo = echo
        self._file = file
        self.started = time.monotonic()
        self.steps: list[Step] = []
        self.phases: list[Phase] = []
        self.phase = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(
        self, text: str = "", *, style: dict[str, Any] | None = None, terminal: bool = True
    ) -> None:
        """One line of user output (styled in the terminal, plain in the file)."""
        if terminal:
            self._echo(click.style(text, **style) if style else text)
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """A phase of the story; its wall-clock time goes into the report."""
        self.phase = name
        self.line()
        self.line(f"── {name} " + "─" * max(4, 60 - len(name)), style={"bold": True})
        begun = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - begun
            self.phases.append(Phase(name, seconds))
            self.line(f"   ({name}: {seconds:.1f}s)", style={"dim": True})

    def note(self, text: str, *, terminal: bool = True) -> None:
        """Something that happened without a member doing it (the worker, the relay)."""
        self.line(f"[{self.elapsed():6.1f}s] · {text}", style={"fg": "cyan"}, terminal=terminal)

    def step(self, actor: str, role: str, action: str, result: Any) -> str:
        """Record `actor` (holding `role`) doing `action`; returns the reply text."""
        reply, embeds = reply_of(result)
        return self.record(actor, role, action, reply, embeds)

    def record(
        self,
        actor: str,
        role: str,
        action: str,
        reply: str,
        embeds: list[dict[str, Any]] | None = None,
    ) -> str:
        """Record a step whose reply is already known."""
        self.steps.append(
            Step(self.phase, self.elapsed(), actor, role, action, reply, list(embeds or []))
        )
        who = f"{actor} ({role})" if role else actor
        self.line(f"[{self.elapsed():6.1f}s] {who} ▸ {action}", style={"fg": "yellow"})
        titles = " · ".join(e.get("title", "") for e in embeds or [] if e.get("title"))
        lines = reply.splitlines() or [titles or "(no reply)"]
        shown = lines[:REPLY_LINES]
        if len(lines) > REPLY_LINES:
            shown.append(f"… ({len(lines) - REPLY_LINES} more lines)")
        for number, text in enumerate(shown):
            self.line(("          bot ◂ " if number == 0 else "                ") + text)
        for embed in embeds or []:
            fields = ", ".join(
                f"{f['name']}: {f['value']}" for f in embed.get("fields", [])[:4] if f.get("name")
            )
            if fields:
                self.line(f"                [{embed.get('title', 'embed')}] {fields}")
        return reply

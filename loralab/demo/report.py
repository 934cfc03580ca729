"""What the demo leaves behind: the released LoRA, the grids and the loss curve copied
out of the lab's storage, an HTML report of every channel (and of each member's
private replies, by role), and a JSON summary with sha256 sums and phase timings."""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord

from db.models import ArtifactKind
from lab.storage import Storage
from loralab.demo.html import embed_html, markdown, message_html, page
from loralab.demo.story import Outcome
from loralab.demo.transcript import Step, Transcript
from loralab.demo.world import World


@dataclass
class Produced:
    """Files the demo wrote (paths on this machine)."""

    released: Path | None = None
    grids: list[Path] = field(default_factory=list)
    loss_curve: Path | None = None
    report: Path | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_artifacts(
    world: World, storage: Storage, outcome: Outcome, paths: Any, produced: Produced
) -> None:
    """Copy the released LoRA, every grid and the loss curve out of storage."""
    ticket = world.ticket(outcome.ticket_id)
    for kind in (ArtifactKind.LORA, ArtifactKind.SAMPLE_GRID, ArtifactKind.LOSS_CURVE):
        for artifact in world.artifacts(outcome.job_id, kind):
            if kind is ArtifactKind.LORA:
                if artifact.epoch != outcome.released_epoch:
                    continue
                name = f"{ticket.trigger_word}-v{ticket.version}-e{artifact.epoch}.safetensors"
                target = paths.released / name
                produced.released = target
            elif kind is ArtifactKind.SAMPLE_GRID:
                target = paths.grids / f"grid-{artifact.id}-e{artifact.epoch}.png"
                produced.grids.append(target)
            else:
                target = paths.loss_curve
                produced.loss_curve = target
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.download(artifact.storage_key, target)
            produced.artifacts.append(
                {
                    "kind": kind.value,
                    "epoch": artifact.epoch,
                    "path": str(target.resolve()),
                    "sha256": sha256_of(target),
                    "stored_sha256": artifact.sha256,
                    "size_bytes": target.stat().st_size,
                }
            )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "channel"


class HtmlReport:
    """Writes ``index.html``, one page per channel or thread, one page of private
    replies per role, and the attachments they show under ``files/``."""

    def __init__(self, world: World, folder: Path) -> None:
        self.world = world
        self.folder = folder
        self.files = folder / "files"
        self.files.mkdir(parents=True, exist_ok=True)

    def _names(self, kind: str, ident: int) -> str:
        guild = self.world.bot.get_guild(self.world.guild.id)
        if kind == "channel":
            channel = self.world.bot.get_channel(ident)
            return getattr(channel, "name", str(ident))
        if kind == "role" and guild is not None:
            role = guild.get_role(ident)
            return role.name if role else str(ident)
        user = self.world.bot.get_user(ident)
        return user.display_name if user else str(ident)

    def _file_src(self, attachment: discord.Attachment) -> str | None:
        data = self.world.env.backend.cdn.get(attachment.url)
        if data is None:
            return None
        name = f"{attachment.id}-{_slug(Path(attachment.filename).stem)}"
        name += Path(attachment.filename).suffix.lower()
        (self.files / name).write_bytes(data)
        return f"files/{name}"

    def _snippet(self, name: str, body: str) -> None:
        """One message alone on a page (``msg-….html``), for pictures of it."""
        (self.folder / f"msg-{name}.html").write_text(page("", body), "utf-8")

    def channel_page(self, channel: Any, title: str) -> str:
        slug = _slug(title)
        parts = [
            message_html(m, file_src=self._file_src, names=self._names)
            for m in channel.history()
            if not m.flags.ephemeral and not m.is_system()  # "pinned a message" lines
        ]
        for number, part in enumerate(parts):
            self._snippet(f"{slug}-{number:02d}", part)
        body = "".join(parts) or "<p>(no messages)</p>"
        (self.folder / f"{slug}.html").write_text(page(title, body), "utf-8")
        return f"{slug}.html"

    def replies_page(self, role: str, steps: list[Step]) -> str:
        parts = []
        for number, step in enumerate(steps):
            reply = markdown(step.reply, self._names)
            parts.append(
                f"<div class='step'><div class='action'>[{step.at:.1f}s] "
                f"<b>{html.escape(step.actor)}</b> ▸ {html.escape(step.action)}</div>"
                f"<div class='msg'><div class='avatar bot'>L</div><div><span class='author'>"
                f"LoRA Lab</span><span class='tag'>APP</span><div class='content'>{reply}</div>"
                + "".join(_embed(e) for e in step.embeds)
                + "<div class='eph'>👁 Only you can see this</div></div></div></div>"
            )
            self._snippet(f"replies-{_slug(role)}-{number:02d}", parts[-1])
        name = f"replies-{_slug(role)}.html"
        title = f"What the bot answered each {role} (private replies)"
        (self.folder / name).write_text(page(title, "".join(parts)), "utf-8")
        return name

    def write(self, transcript: Transcript) -> Path:
        links = []
        for channel in self.world.guild.channels.values():
            if channel.is_thread:
                continue
            links.append((f"#{channel.name}", self.channel_page(channel, f"#{channel.name}")))
            for thread in channel.threads:
                title = f"#{channel.name} › {thread.name}"
                links.append((title, self.channel_page(thread, title)))
        roles: dict[str, list[Step]] = {}
        for step in transcript.steps:
            roles.setdefault(step.role, []).append(step)
        replies = [
            (f"{role}: private replies", self.replies_page(role, s)) for role, s in roles.items()
        ]
        nav = "".join(
            f"<a href='{html.escape(href)}'>{html.escape(label)}</a>"
            for label, href in [*links, *replies]
        )
        index = self.folder / "index.html"
        index.write_text(page("LoRA Lab demo: the simulated server", f"<nav>{nav}</nav>"), "utf-8")
        return index


def _embed(embed: dict[str, Any]) -> str:
    return embed_html(embed, lambda url: None, markdown)


def json_report(
    outcome: Outcome | None,
    world: World | None,
    transcript: Transcript,
    produced: Produced,
    *,
    error: str | None,
    base_model: str,
) -> dict[str, Any]:
    """The machine-readable summary (``--json-report``)."""
    ticket: dict[str, Any] | None = None
    if outcome is not None and world is not None:
        row = world.ticket(outcome.ticket_id)
        job = world.latest_job(outcome.ticket_id)
        ticket = {
            "id": row.id,
            "number": row.number,
            "name": row.name,
            "trigger_word": row.trigger_word,
            "status": row.status.value.upper(),
            "chosen_epoch": row.chosen_epoch,
            "job": {"id": job.id, "status": job.status.value, "attempt": job.attempt}
            if job is not None
            else None,
        }
    return {
        "ok": error is None,
        "error": error,
        "base_model": base_model,
        "ticket": ticket,
        "released_lora": _file(produced.released),
        "loss_curve": _file(produced.loss_curve),
        "grids": [_file(g) for g in produced.grids],
        "html_report": str(produced.report.resolve()) if produced.report else None,
        "artifacts": produced.artifacts,
        "phases": [{"name": p.name, "seconds": round(p.seconds, 2)} for p in transcript.phases],
        "total_seconds": round(transcript.elapsed(), 2),
        "steps": len(transcript.steps),
    }


def _file(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    return {
        "path": str(path.resolve()),
        "sha256": sha256_of(path),
        "size_bytes": path.stat().st_size,
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")

"""Uploads: fetched once when they arrive (attachment URLs expire), only from
Discord's attachment hosts and under a size cap, then ingested by `lab.dataset`.
Pure: the cog does the fetching; this module decides what to fetch and what to say."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from db.dataset import NewImage, TicketBasics
from lab.dataset.ingest import CaptionPolicy, ingest
from lab.dataset.settings import IngestSettings
from lab.dataset.sources import from_uploads
from lab.storage import Storage


@dataclass(slots=True)
class UploadOutcome:
    """Per file: ✅ or a one-line reason; plus what to record in the database."""

    lines: list[str] = field(default_factory=list)
    images: list[NewImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _mib(size: int) -> str:
    if size < 1_048_576:
        return f"{size / 1024:.0f} KiB"
    return f"{size / 1_048_576:.1f} MiB"


def fetch_refusal(
    filename: str, url: str, size: int, hosts: frozenset[str], limit: int
) -> str | None:
    """Why an attachment is not fetched at all (not from Discord, or said to be too big),
    or ``None`` to fetch it."""
    host = urlparse(url).hostname or ""
    if host not in hosts:
        return f"❌ {filename}: not a Discord attachment; not fetched."
    if size > limit:
        return f"❌ {filename}: {_mib(size)} is over the {_mib(limit)} limit for one file."
    return None


def size_refusal(filename: str, fetched: int, limit: int) -> str | None:
    """Why fetched bytes are refused (more than the cap: the size it claimed was wrong)."""
    if fetched > limit:
        return f"❌ {filename}: larger than it claimed; refused."
    return None


def ingest_uploads(
    files: list[tuple[str, Path]],
    storage: Storage,
    settings: IngestSettings,
    basics: TicketBasics,
) -> UploadOutcome:
    """Run the dataset ingest over downloaded files (blocking: call it in a thread)."""
    sizes: dict[str, int] = {}

    def store(key: str, data: bytes, ext: str) -> str:
        stored = storage.put_bytes(f"images/{key[:2]}/{key}.{ext}", data)
        sizes[stored.key] = stored.size
        return stored.key

    result = ingest(
        from_uploads(files, settings),
        store,
        settings,
        family=basics.family,
        captions=CaptionPolicy(basics.trigger_word, basics.class_token),
        known=basics.known,
    )
    outcome = UploadOutcome()
    for accepted in result.accepted:
        outcome.lines.append(f"✅ {accepted.source} ({accepted.width}×{accepted.height})")
        outcome.images.append(
            NewImage(
                source=accepted.source,
                sha256=accepted.sha256,
                phash=accepted.phash,
                width=accepted.width,
                height=accepted.height,
                size_bytes=sizes.get(accepted.stored, 0),
                storage_key=accepted.stored,
                caption=accepted.caption,
            )
        )
    outcome.lines.extend(f"❌ {rejection.message}" for rejection in result.rejected)
    outcome.warnings.extend(notice.message for notice in result.warnings[:5])
    for a, b, _ in result.near_duplicates[:5]:
        outcome.warnings.append(f"{a} and {b} look nearly identical; keep the better one.")
    return outcome


def report(outcome: UploadOutcome, total: int, limit: int = 1900) -> str:
    """The reply: one line per file (cut to fit a message), then warnings and the total."""
    accepted = sum(1 for line in outcome.lines if line.startswith("✅"))
    head = f"**{accepted} of {len(outcome.lines)} files added** · the dataset has {total} images."
    body: list[str] = []
    used = len(head)
    lines = outcome.lines + [f"⚠️ {w}" for w in outcome.warnings]
    for index, line in enumerate(lines):
        line = line if len(line) <= 200 else line[:199] + "…"
        if used + len(line) + 30 > limit:
            body.append(f"…and {len(lines) - index} more lines.")
            break
        body.append(line)
        used += len(line) + 1
    return "\n".join([head, *body])

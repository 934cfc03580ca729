"""Pure formatting: what members read. No I/O; every text stays inside Discord's limits
(embed title 256, description 4096, field value 1024, 25 fields, message 2000)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import discord

from db.dataset import DatasetStatus
from db.stats import LeaderLine
from db.tickets import TicketCard
from lab.apps import App, dora_note, fit_error
from lab.lifecycle import TicketState

STATUS_COLOUR: dict[TicketState, int] = {
    TicketState.DATASET: 0x5865F2,
    TicketState.CAPTIONING: 0x3498DB,
    TicketState.REVIEW: 0xF1C40F,
    TicketState.READY: 0x2ECC71,
    TicketState.CLAIMED: 0x1ABC9C,
    TicketState.TRAINING: 0xE67E22,
    TicketState.TESTING: 0x9B59B6,
    TicketState.RELEASED: 0x57F287,
    TicketState.CANCELLED: 0x95A5A6,
    TicketState.REJECTED: 0xED4245,
    TicketState.FAILED: 0xED4245,
}
NEXT_STEP: dict[TicketState, str] = {
    TicketState.DATASET: "Curators upload images with /dataset upload, then /dataset done.",
    TicketState.CAPTIONING: "Captioners fix captions with /caption …, then /caption done.",
    TicketState.REVIEW: "The requester checks the dataset: /dataset approve or "
    "/dataset request-changes.",
    TicketState.READY: "Waiting on #job-board for a Trainer to claim it.",
    TicketState.CLAIMED: "The trainer sets /train config, then /train start.",
    TicketState.TRAINING: "Training on a lab GPU; progress is posted below.",
    TicketState.TESTING: "Testers vote on the sample grids; then /lora release epoch:<n>.",
    TicketState.RELEASED: "Released. /lora iterate opens the next version.",
    TicketState.CANCELLED: "Cancelled.",
    TicketState.REJECTED: "Rejected by a Lab Admin.",
    TicketState.FAILED: "Training failed; the trainer may /train retry.",
}
ROLE_TITLES = {
    "request": "Requested by",
    "curate": "Dataset",
    "caption": "Captions",
    "train": "Training",
    "test": "Testing",
}


_MASKED_LINK = re.compile(r"\[([^\]\n]*)\]\(\s*<?(https?://[^)\s>]*)>?\s*\)", re.I)


def plain(text: str) -> str:
    """Member text made safe to post: a masked link (``[label](url)``) is shown as its
    label and its real address, never as a link whose address is hidden. (Mentions in
    it notify no one: the bot sends with ``AllowedMentions.none()``.)"""
    return _MASKED_LINK.sub(lambda m: f"{m[1]} ({m[2]})", text)


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ticket_title(card: TicketCard) -> str:
    version = f" v{card.version}" if card.version > 1 else ""
    return clip(f"#{card.number} {card.name}{version}", 100)


def card_marker(ticket_id: int) -> str:
    """The footer of the card, board offer and release post: how the relay recognises a
    message it already made for the ticket when Discord's answer was lost."""
    return f"ticket:{ticket_id}"


def ticket_card_embed(card: TicketCard) -> discord.Embed:
    """The starter message of the ticket's forum post, kept current by the relay."""
    embed = discord.Embed(
        title=clip(f"Ticket {ticket_title(card)}", 256),
        description=clip(plain(card.description or "No description."), 1000),
        colour=STATUS_COLOUR[card.status],
    )
    embed.add_field(name="Status", value=card.status.value.upper())
    embed.add_field(name="Trigger word", value=clip(f"`{card.trigger_word}`", 1024))
    embed.add_field(name="Class token", value=clip(card.class_token, 1024))
    embed.add_field(name="Kind", value=card.kind)
    embed.add_field(name="Base", value=f"{card.base_model} ({card.family})")
    embed.add_field(name="Images", value=f"{card.image_count} ({card.captioned_count} captioned)")
    if card.votes_up or card.votes_down:
        embed.add_field(name="Votes", value=f"👍 {card.votes_up} · 👎 {card.votes_down}")
    if card.claimer:
        embed.add_field(name="Trainer", value=clip(card.claimer, 1024))
    embed.add_field(name="People", value=clip(people_text(card), 1024), inline=False)
    embed.add_field(name="Next", value=NEXT_STEP[card.status], inline=False)
    embed.set_footer(text=card_marker(card.id))
    return embed


def people_text(card: TicketCard) -> str:
    lines = [
        f"{ROLE_TITLES.get(kind, kind)}: {', '.join(names)}"
        for kind, names in card.people.items()
        if names
    ]
    return "\n".join(lines) or card.requester


def board_embed(card: TicketCard) -> discord.Embed:
    """The #job-board offer of a READY job (or what became of it)."""
    if card.status is TicketState.READY:
        text = "Ready to train. Trainers: press **Claim** to take it."
    elif card.claimer:
        text = f"Claimed by **{card.claimer}** ({card.status.value.upper()})."
    else:
        text = f"No longer offered ({card.status.value.upper()})."
    embed = discord.Embed(
        title=clip(f"Job for {ticket_title(card)}", 256),
        description=text,
        colour=STATUS_COLOUR[card.status],
    )
    embed.add_field(name="Base", value=f"{card.base_model} ({card.family})")
    embed.add_field(name="Images", value=str(card.image_count))
    embed.add_field(name="Trigger", value=clip(f"`{card.trigger_word}`", 1024))
    embed.set_footer(text=card_marker(card.id))
    return embed


def ticket_line(card: TicketCard) -> str:
    who = f" · trainer {card.claimer}" if card.claimer else ""
    return clip(
        f"**{ticket_title(card)}** — {card.status.value.upper()} · {card.image_count} images{who}",
        200,
    )


def progress_bar(fraction: float, width: int = 20) -> str:
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


def _eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def progress_text(job_id: int, status: str, progress: dict[str, Any]) -> str:
    """The one training message edited in place: bar, epoch/step, loss, it/s, ETA, GPU."""
    step = int(progress.get("step", 0))
    total = int(progress.get("total_steps", 0)) or 1
    lines = [
        f"**Training job {job_id}** — {status}",
        f"`{progress_bar(step / total)}` {100 * step / total:.0f}%",
        f"epoch {progress.get('epoch', 0)}/{progress.get('total_epochs', '?')} · "
        f"step {step}/{progress.get('total_steps', '?')}",
    ]
    if "loss" in progress:
        speed = float(progress.get("steps_per_second", 0.0))
        loss = float(progress.get("average_loss", progress["loss"]))
        lines.append(
            f"loss {loss:.4f} · {speed:.2f} it/s · ETA {_eta(progress.get('eta_seconds'))}"
        )
    if progress.get("detail"):
        lines.append(clip(str(progress["detail"]), 300))
    if progress.get("worker") or progress.get("gpu"):
        lines.append(f"worker {progress.get('worker', '?')} · GPU {progress.get('gpu', '?')}")
    return clip("\n".join(lines), 2000)


def tally_text(up: int, down: int) -> str:
    return f"👍 {up} · 👎 {down}"


@dataclass(frozen=True)
class DoraRelease:
    """A DoRA model's release: the lab's apps, and the plain-LoRA fit when attached."""

    apps: tuple[App, ...]
    compat: bytes | None
    compat_name: str


def dora_text(dora: DoraRelease, original: str) -> str:
    """Which file to load where: the fit for apps that misread DoRA, the original for
    LyCORIS; one line per app on what it does with the original."""
    if dora.compat is not None:
        error = fit_error(dora.compat)
        fit = f" (fit error {error:.0%} of the weight change)" if error is not None else ""
        head = (
            f"`{dora.compat_name}` (attached first) is a plain LoRA fitted to this DoRA "
            f"model{fit} for the apps below; "
            f"`{original}` is the DoRA original, for LyCORIS, which applies it right."
        )
    else:
        head = f"`{original}` is a DoRA model. What your app does with it:"
    return head + "\n" + dora_note(dora.apps)


def release_embed(
    card: TicketCard, release: Any, *, link: str | None, dora: DoraRelease | None = None
) -> discord.Embed:
    """The #releases post: what was made, how to use it, and who made it."""
    embed = discord.Embed(
        title=clip(f"🎉 Released: {ticket_title(card)}", 256),
        description=clip(plain(card.description or ""), 1000),
        colour=STATUS_COLOUR[TicketState.RELEASED],
    )
    embed.add_field(name="Base model", value=f"{card.base_model} ({card.family})")
    embed.add_field(name="Trigger word", value=clip(f"`{card.trigger_word}`", 1024))
    embed.add_field(name="Suggested weight", value=f"{release.suggested_weight:g}")
    embed.add_field(name="Epoch", value=str(release.epoch))
    embed.add_field(name="Steps", value=str(release.steps or "—"))
    embed.add_field(name="Epochs trained", value=str(release.epochs or "—"))
    if link:
        embed.add_field(
            name="Download", value=clip(f"[{release.filename}]({link})", 1024), inline=False
        )
    elif release.lora_key is None:
        embed.add_field(
            name="Download", value="The file is held by the lab; ask a Lab Admin.", inline=False
        )
    if dora is not None:
        embed.add_field(name="DoRA", value=clip(dora_text(dora, release.filename), 1024),
                        inline=False)  # fmt: skip
    embed.add_field(name="Credits", value=clip(people_text(card), 1024), inline=False)
    embed.set_footer(text=card_marker(card.id))
    return embed


def sample_embed(card: TicketCard, sample: Any) -> discord.Embed:
    """A sample grid post: rows are prompts, columns epochs or weights; votes below."""
    epoch = f" · epoch {sample.epoch}" if sample.epoch is not None else ""
    embed = discord.Embed(
        title=clip(f"Samples for {ticket_title(card)}{epoch}", 256),
        colour=STATUS_COLOUR[TicketState.TESTING],
    )
    prompts = "\n".join(f"{i + 1}. {p}" for i, p in enumerate(sample.prompts[:10]))
    embed.add_field(
        name="Prompts (rows)", value=clip(prompts or "default prompts", 1024), inline=False
    )
    embed.add_field(name="Votes", value=tally_text(sample.up, sample.down))
    embed.set_footer(text=f"sample set {sample.id} · one vote per member; voting again changes it")
    return embed


def with_tally(embed: discord.Embed, up: int, down: int) -> discord.Embed:
    """`embed` (a sample grid's) with its Votes field showing `up`/`down`."""
    for index, field in enumerate(embed.fields):
        if field.name == "Votes":
            embed.set_field_at(index, name="Votes", value=tally_text(up, down), inline=field.inline)
    return embed


def dataset_embed(status: DatasetStatus) -> discord.Embed:
    """`/dataset status`: counts, shapes, training buckets, sizes, warnings, the list."""
    embed = discord.Embed(title="Dataset", colour=0x5865F2)
    embed.add_field(name="Images", value=f"{status.count} ({status.captioned} captioned)")
    embed.add_field(
        name="Shapes",
        value=", ".join(f"{k} {v}" for k, v in sorted(status.shapes.items())) or "—",
    )
    embed.add_field(
        name="Buckets (training)",
        value=clip(", ".join(f"{k} {v}" for k, v in status.buckets.items()) or "—", 1024),
    )
    embed.add_field(
        name="Sizes",
        value=", ".join(f"{k} {v}" for k, v in sorted(status.resolutions.items())) or "—",
    )
    embed.add_field(
        name="Warnings", value=clip("\n".join(status.warnings) or "none", 1024), inline=False
    )
    listing = "\n".join(f"`{i}` {name} ({w}×{h})" for i, name, w, h in status.images)
    embed.description = clip(listing or "No images yet.", 4000)
    return embed


def stats_embed(lines: list[LeaderLine], counts: dict[str, int]) -> discord.Embed:
    """`/lora stats`: the contribution leaderboard and tickets per state."""
    embed = discord.Embed(title="Lab contributions", colour=0x5865F2)
    board = "\n".join(
        f"{i + 1}. **{line.name}** — {line.total} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(line.by_kind.items()))})"
        for i, line in enumerate(lines)
    )
    embed.description = clip(board or "No contributions yet.", 4000)
    embed.add_field(
        name="Tickets",
        value=clip(
            ", ".join(f"{k.upper()} {v}" for k, v in sorted(counts.items())) or "none", 1024
        ),
    )
    return embed

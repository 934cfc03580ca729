"""Export an ingested dataset to the kohya folder layout the trainer reads.

``OUT/N_<trigger> <class>/`` holds each image with its ``.txt`` caption; N (repeats per
epoch) is given, or chosen so that ``images × N × epochs / batch_size`` lands near a
preset's target step count (the guides aim for ~1,500–3,000 steps).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lab.captions import enforce_trigger, join_tags, normalise_caption, split_tags
from lab.dataset.reasons import DatasetError

__all__ = ["ExportError", "ExportResult", "choose_repeats", "export_kohya", "kohya_folder_name"]

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_FORBIDDEN = set('/\\:*?"<>|\x00')


class ExportError(DatasetError):
    """The export cannot be written as asked."""

    code = "export_error"

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


@dataclass(frozen=True, slots=True)
class ExportResult:
    """Where the kohya folder went and what it holds."""

    folder: Path
    repeats: int
    images: int
    captions_written: int

    @property
    def steps_per_epoch(self) -> int:
        """At batch size 1: images × repeats."""
        return self.images * self.repeats


def choose_repeats(num_images: int, target_steps: int, epochs: int, batch_size: int = 1) -> int:
    """Repeats N so that ``num_images × N × epochs / batch_size ≈ target_steps`` (≥ 1)."""
    if num_images <= 0 or epochs <= 0 or batch_size <= 0:
        raise ValueError("num_images, epochs and batch_size must be positive")
    return max(1, round(target_steps * batch_size / (num_images * epochs)))


def kohya_folder_name(repeats: int, trigger: str, class_token: str | None = None) -> str:
    """``"10_ohwx woman"``; refuses names that cannot be a folder or would not parse."""
    if repeats < 1:
        raise ExportError("repeats must be at least 1")
    trigger = " ".join(trigger.split())
    if not trigger or " " in trigger:
        raise ExportError("the trigger word must be one word without spaces")
    name = f"{repeats}_{trigger}"
    if class_token:
        name += " " + " ".join(class_token.split())
    if set(name) & _FORBIDDEN or name.endswith((".", " ")) or len(name) > 120:
        raise ExportError(f"'{name}' cannot be used as a folder name")
    return name


def export_kohya(
    dataset: Path,
    out: Path,
    trigger: str,
    class_token: str | None = None,
    *,
    repeats: int | None = None,
    target_steps: int | None = None,
    epochs: int = 10,
    batch_size: int = 1,
    enforce: bool = True,
    link: bool = True,
) -> ExportResult:
    """Write ``out/N_<trigger> <class>/`` from the flat dataset folder ``dataset``.

    With ``enforce`` every caption starts with the trigger and class token (a missing
    caption becomes just those two). ``link`` hard-links images where the file system
    allows it, copying otherwise.
    """
    images = sorted(
        p for p in dataset.iterdir() if p.is_file() and p.suffix.casefold() in _IMAGE_SUFFIXES
    )
    if not images:
        raise ExportError(f"{dataset}: no images to export")
    if repeats is None:
        if target_steps is None:
            raise ExportError("give repeats or target_steps")
        repeats = choose_repeats(len(images), target_steps, epochs, batch_size)
    folder = out / kohya_folder_name(repeats, trigger, class_token)
    if folder.exists() and any(folder.iterdir()):
        raise ExportError(f"{folder}: already exists and is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for image in images:
        _place(image, folder / image.name, link)
        caption_path = image.with_suffix(".txt")
        caption = (
            caption_path.read_bytes().decode("utf-8-sig", errors="replace")
            if caption_path.is_file()
            else None
        )
        if enforce:
            tags = split_tags(normalise_caption(caption or ""))
            caption = join_tags(enforce_trigger(tags, trigger, class_token))
        if caption is not None:
            (folder / caption_path.name).write_text(caption, encoding="utf-8")
            written += 1
    logger.info("exported %d images to %s (repeats %d)", len(images), folder, repeats)
    return ExportResult(folder, repeats, len(images), written)


def _place(src: Path, dst: Path, link: bool) -> None:
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system or no hard links: copy instead
    shutil.copyfile(src, dst)

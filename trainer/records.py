"""One image of the dataset and the caption rules applied each time it is drawn."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lab.buckets import BucketAssignment
from lab.captions import join_tags, shuffle_caption, split_fixed


@dataclass(frozen=True, slots=True)
class CaptionRules:
    """kohya's caption options for one subset, applied each time an image is drawn."""

    shuffle: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    prefix: str | None = None
    suffix: str | None = None
    dropout_rate: float = 0.0
    tag_dropout_rate: float = 0.0

    @property
    def is_static(self) -> bool:
        """True when a caption always becomes the same text (so its encoding can be cached)."""
        return not self.shuffle and self.dropout_rate == 0 and self.tag_dropout_rate == 0

    def apply(self, caption: str, rng: random.Random) -> str:
        """The caption to train on this time: prefix/suffix, then dropout, shuffle and tag
        dropout with kohya's ``keep_tokens``/``keep_tokens_separator`` (``lab.captions``)."""
        if self.prefix:
            caption = f"{self.prefix} {caption}"
        if self.suffix:
            caption = f"{caption} {self.suffix}"
        if self.dropout_rate and rng.random() < self.dropout_rate:
            return ""
        if self.is_static:
            return caption
        if self.shuffle:
            return shuffle_caption(
                caption,
                rng,
                keep_tokens=self.keep_tokens,
                keep_tokens_separator=self.keep_tokens_separator,
                tag_dropout_rate=self.tag_dropout_rate,
            )
        fixed, flex, suffix = split_fixed(caption, self.keep_tokens, self.keep_tokens_separator)
        flex = [tag for tag in flex if rng.random() >= self.tag_dropout_rate]
        return join_tags(fixed + flex + suffix)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image of the dataset with everything needed to train on it."""

    path: Path
    caption: str
    subset: str
    """The subset folder's name (``10_sks``): the key of ``ss_tag_frequency``."""
    is_reg: bool
    rules: CaptionRules
    flip_aug: bool
    assignment: BucketAssignment
    original_size: tuple[int, int] = (0, 0)
    """(width, height) of the image file: SDXL's ``original_size`` conditioning."""
    dataset: int = 0
    """Which ``[[datasets]]`` entry it came from: batches never mix datasets (kohya)."""

    @property
    def bucket(self) -> tuple[int, int]:
        return self.assignment.bucket

    def crop_top_left(self, *, flip: bool) -> tuple[int, int]:
        """(left, top) of the crop in the resized image; mirrored with a flip (kohya)."""
        left, top = self.assignment.crop
        if flip:
            left = self.assignment.resized[0] - left - self.assignment.bucket[0]
        return left, top

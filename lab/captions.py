"""Caption rules shared by ingestion, the health report and the trainer.

A caption is a comma-separated list of tags (booru style) or sentences; both are
handled as tags. The trainer reuses :func:`split_tags`, :func:`join_tags`,
:func:`split_fixed` and :func:`shuffle_caption`, which follow kohya sd-scripts'
``keep_tokens`` / ``keep_tokens_separator`` / ``shuffle_caption`` semantics.
"""

from __future__ import annotations

import codecs
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from lab.dataset.reasons import DatasetError, Reason, Warn

__all__ = [
    "CaptionCheck",
    "check_trigger",
    "decode_caption",
    "enforce_trigger",
    "join_tags",
    "normalise_caption",
    "shuffle_caption",
    "split_fixed",
    "split_tags",
    "tag_frequency",
]

_SPACES = re.compile(r"\s+")
# Control characters other than tab/newline/CR mean the "text" is binary.
_BINARY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def decode_caption(data: bytes, source: str, max_bytes: int = 16 * 1024) -> str:
    """Decode an uploaded caption file: UTF-8 (a BOM is tolerated), text only.

    Raises :class:`DatasetError` with ``caption_too_large``, ``caption_binary`` or
    ``caption_encoding``.
    """
    if len(data) > max_bytes:
        raise DatasetError(
            Reason.CAPTION_TOO_LARGE,
            f"{source}: caption is {len(data):,} bytes, over the {max_bytes:,}-byte limit.",
        )
    if b"\x00" in data:
        raise DatasetError(Reason.CAPTION_BINARY, f"{source}: is binary data, not a text caption.")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(
            Reason.CAPTION_ENCODING,
            f"{source}: caption is not UTF-8 text (byte {error.start}); save it as UTF-8.",
        ) from error
    if _BINARY.search(text):
        raise DatasetError(
            Reason.CAPTION_BINARY, f"{source}: contains control characters, not a text caption."
        )
    return text


def split_tags(caption: str, separator: str = ",") -> list[str]:
    """Tags of a caption: split on ``separator`` and line breaks, whitespace collapsed,
    empty tags (``a,,b`` or a trailing comma) dropped. Order is kept."""
    tags = []
    for line in caption.splitlines():
        for raw in line.split(separator):
            tag = _SPACES.sub(" ", raw).strip()
            if tag:
                tags.append(tag)
    return tags


def join_tags(tags: Iterable[str], separator: str = ", ") -> str:
    """The caption text of ``tags`` (kohya joins with ``", "``)."""
    return separator.join(tags)


def normalise_caption(caption: str) -> str:
    """One clean line: tags split and re-joined, repeated tags removed (first kept)."""
    seen: set[str] = set()
    unique = []
    for tag in split_tags(caption):
        key = tag.casefold()
        if key not in seen:
            seen.add(key)
            unique.append(tag)
    return join_tags(unique)


def split_fixed(
    caption: str, keep_tokens: int = 0, keep_tokens_separator: str = ""
) -> tuple[list[str], list[str], list[str]]:
    """``(fixed, flexible, fixed_suffix)`` tags, as kohya splits them before shuffling.

    With ``keep_tokens_separator`` present (kohya's ``|||``) the part before it is fixed,
    and a second separator starts a fixed suffix; otherwise the first ``keep_tokens``
    tags are fixed.
    """
    if keep_tokens_separator and keep_tokens_separator in caption:
        fixed_part, flex_part = caption.split(keep_tokens_separator, 1)
        suffix: list[str] = []
        if keep_tokens_separator in flex_part:
            flex_part, suffix_part = flex_part.split(keep_tokens_separator, 1)
            suffix = split_tags(suffix_part)
        return split_tags(fixed_part), split_tags(flex_part), suffix
    tags = split_tags(caption)
    keep = max(0, keep_tokens)
    return tags[:keep], tags[keep:], []


def shuffle_caption(
    caption: str,
    rng: random.Random,
    *,
    keep_tokens: int = 0,
    keep_tokens_separator: str = "",
    tag_dropout_rate: float = 0.0,
) -> str:
    """Kohya's ``shuffle_caption``: shuffle the flexible tags, optionally drop some."""
    fixed, flex, suffix = split_fixed(caption, keep_tokens, keep_tokens_separator)
    rng.shuffle(flex)
    if tag_dropout_rate > 0:
        flex = [tag for tag in flex if rng.random() >= tag_dropout_rate]
    return join_tags(fixed + flex + suffix)


@dataclass(frozen=True, slots=True)
class CaptionCheck:
    """How a caption's first tags compare with the expected trigger and class token."""

    has_trigger: bool
    trigger_first: bool
    class_second: bool
    problems: tuple[Warn, ...]


def _same(a: str, b: str) -> bool:
    return _SPACES.sub(" ", a).strip().casefold() == _SPACES.sub(" ", b).strip().casefold()


def check_trigger(tags: list[str], trigger: str, class_token: str | None = None) -> CaptionCheck:
    """Check that ``trigger`` is the first tag and ``class_token`` (if any) the second."""
    has_trigger = any(_same(tag, trigger) for tag in tags)
    trigger_first = bool(tags) and _same(tags[0], trigger)
    class_second = class_token is None or (len(tags) > 1 and _same(tags[1], class_token))
    problems: list[Warn] = []
    if not has_trigger:
        problems.append(Warn.TRIGGER_MISSING)
    elif not trigger_first:
        problems.append(Warn.TRIGGER_NOT_FIRST)
    if not class_second:
        problems.append(Warn.CLASS_NOT_SECOND)
    return CaptionCheck(has_trigger, trigger_first, class_second, tuple(problems))


def enforce_trigger(tags: list[str], trigger: str, class_token: str | None = None) -> list[str]:
    """``tags`` with ``trigger`` first and ``class_token`` second (moved, or inserted)."""
    rest = [
        tag
        for tag in tags
        if not _same(tag, trigger) and not (class_token and _same(tag, class_token))
    ]
    head = [trigger.strip()]
    if class_token:
        head.append(class_token.strip())
    return head + rest


def tag_frequency(captions: Iterable[Iterable[str]]) -> dict[str, int]:
    """How many captions use each tag (kohya's ``ss_tag_frequency`` counts), most first."""
    counts: Counter[str] = Counter()
    for tags in captions:
        counts.update({tag: 1 for tag in tags})
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

"""Stable reason codes and the one-line messages members see for them.

A code never changes once shipped: the bot, the worker's failure records and the CLI's
JSON all carry it. Messages may be reworded; they are one line and name the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lab.errors import LabError


class Reason(StrEnum):
    """Why a file was rejected."""

    EMPTY_FILE = "empty_file"
    FILE_TOO_LARGE = "file_too_large"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    DECOMPRESSION_BOMB = "decompression_bomb"
    ANIMATED = "animated"
    TOO_SMALL = "too_small"
    DUPLICATE = "duplicate"
    CAPTION_BINARY = "caption_binary"
    CAPTION_ENCODING = "caption_encoding"
    CAPTION_TOO_LARGE = "caption_too_large"
    ZIP_SLIP = "zip_slip"
    ZIP_BOMB = "zip_bomb"
    NESTED_ARCHIVE = "nested_archive"
    TOO_MANY_ENTRIES = "too_many_entries"
    CORRUPT_ARCHIVE = "corrupt_archive"
    ENCRYPTED = "encrypted"
    SYMLINK = "symlink"


class Warn(StrEnum):
    """Something the lab fixed or noticed in an accepted file (or a batch)."""

    ANIMATED_FIRST_FRAME = "animated_first_frame"
    TRANSPARENCY_FLATTENED = "transparency_flattened"
    ORIENTATION_APPLIED = "orientation_applied"
    DOWNSCALED = "downscaled"
    CONVERTED = "converted"
    COLOR_PROFILE = "color_profile"
    SMALL_IMAGE = "small_image"
    CAPTION_NORMALISED = "caption_normalised"
    CAPTION_ENFORCED = "caption_enforced"
    CAPTION_MISSING = "caption_missing"
    TRIGGER_MISSING = "trigger_missing"
    TRIGGER_NOT_FIRST = "trigger_not_first"
    CLASS_NOT_SECOND = "class_not_second"
    CAPTION_WITHOUT_IMAGE = "caption_without_image"
    SKIPPED_SYSTEM_FILE = "skipped_system_file"
    ALREADY_STORED = "already_stored"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A file that was refused: which file, the stable code, a one-line message."""

    source: str
    code: Reason
    message: str

    def as_dict(self) -> dict[str, str]:
        """The JSON shape: ``{"source", "code", "message"}``."""
        return {"source": self.source, "code": str(self.code), "message": self.message}


@dataclass(frozen=True, slots=True)
class Notice:
    """A warning about one file (``source``) or the whole batch (``source`` empty)."""

    source: str
    code: Warn
    message: str

    def as_dict(self) -> dict[str, str]:
        """The JSON shape: ``{"source", "code", "message"}``."""
        return {"source": self.source, "code": str(self.code), "message": self.message}


class DatasetError(LabError):
    """The base error of :mod:`lab.dataset`; with a :class:`Reason`, a refused file.

    Raised inside the ingest pipeline and turned into a :class:`Rejection` at its edge.
    """

    code: str = "dataset_error"

    def __init__(self, reason: Reason | None, message: str) -> None:
        super().__init__(message, code=str(reason) if reason is not None else None)
        self.reason = reason

    def rejection(self, source: str) -> Rejection:
        """This error as the per-file record shown to the uploader."""
        if self.reason is None:
            raise ValueError("only an error with a reason describes a refused file")
        return Rejection(source, self.reason, str(self))

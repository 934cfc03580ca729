"""Ingestion limits and choices, one pydantic model under ``CommonSettings.ingest``.

TOML: ``[ingest]`` section; environment: ``LORALAB_INGEST__MAX_SIDE=2048``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from lab.families import FAMILIES, BaseFamily

MiB = 1024 * 1024


class IngestSettings(BaseModel):
    """How uploads are checked and normalised (defaults follow the seed guides)."""

    model_config = {"frozen": True, "extra": "forbid"}

    max_pixels: int = Field(
        60_000_000, gt=0, description="Refuse images with more pixels, before decoding."
    )
    max_decode_bytes: int = Field(
        192 * MiB,
        gt=0,
        description="Working memory one image may need to decode and convert, estimated "
        "from its header before decoding (about 33 MP opaque, 16 MP with transparency); "
        "JPEGs are decoded at reduced size when they are downscaled anyway.",
    )
    max_side: int = Field(3000, ge=64, description="Longer sides are downscaled to this.")
    downscale_filter: Literal["area", "bicubic", "lanczos"] = Field(
        "area",
        description="Filter for that downscale; area averaging is what kohya uses "
        "(cv2.INTER_AREA) when it shrinks images, and the cheapest.",
    )
    min_side: dict[BaseFamily, int] = Field(
        default_factory=lambda: {f: d.min_side for f, d in FAMILIES.items()},
        description="Shortest side under which an image is too small for the family.",
    )
    too_small: Literal["reject", "warn"] = Field(
        "reject", description="What to do with an image under the family's min side."
    )
    absolute_min_side: int = Field(
        64, ge=1, description="Always rejected under this, whatever `too_small` says."
    )
    background: tuple[int, int, int] = Field(
        (255, 255, 255), description="RGB colour transparent pixels are flattened onto."
    )
    animated: Literal["first_frame", "reject"] = Field(
        "first_frame", description="Animated PNG/WebP: keep the first frame, or refuse."
    )
    phash_distance: int = Field(
        6, ge=0, le=64, description="Near-duplicates: perceptual-hash Hamming distance."
    )
    jpeg_quality: int = Field(95, ge=50, le=100, description="Re-encoding quality of JPEGs.")
    png_compress_level: int = Field(3, ge=0, le=9)
    max_file_bytes: int = Field(50 * MiB, gt=0, description="Largest single upload.")
    caption_max_bytes: int = Field(16 * 1024, gt=0, description="Largest caption file.")
    caption_upload_max_bytes: int = Field(
        4 * MiB,
        gt=0,
        description="Largest `/caption upload` file (a .txt or a .zip of them), and the "
        "most caption text read from any one upload.",
    )
    zip_max_entries: int = Field(5000, gt=0)
    zip_max_entry_bytes: int = Field(
        50 * MiB, gt=0, description="Per entry, counted while reading (not the header)."
    )
    zip_max_total_bytes: int = Field(1024 * MiB, gt=0, description="Per archive, all entries.")
    zip_max_ratio: int = Field(
        200, gt=1, description="An entry inflating more than this many times is a bomb."
    )
    folder_max_files: int = Field(10_000, gt=0)
    workers: int | None = Field(None, ge=1, description="Decode threads; None = one per CPU core.")

    @field_validator("background")
    @classmethod
    def _channels_in_range(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= channel <= 255 for channel in value):
            raise ValueError("background channels must be within 0..255")
        return value

    def min_side_for(self, family: BaseFamily | None) -> int:
        """The family's minimum shortest side (the absolute floor when no family)."""
        if family is None:
            return self.absolute_min_side
        return max(self.absolute_min_side, self.min_side.get(family, self.absolute_min_side))

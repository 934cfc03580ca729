"""kohya's dataset definition: ``[general]``, ``[[datasets]]`` and ``[[datasets.subsets]]``.

The same keys as sd-scripts' dataset config (``docs/config_README``): a subset's options
may be written on the subset, on its dataset or under ``[general]``, and the most
specific wins (subset, then dataset, then general, then the training config's own key).
Each ``[[datasets]]`` may have its own resolution, batch size and buckets. The file is
either inline in the training config or a separate one named by ``dataset_config``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lab.training.errors import ConfigError
from lab.training.kohya import OFF_ONLY_KEYS, check_off_only

# Per-dataset keys of sd-scripts (the rest of a dataset's keys are subset options).
DATASET_ONLY_KEYS = frozenset(
    {
        "resolution",
        "batch_size",
        "enable_bucket",
        "min_bucket_reso",
        "max_bucket_reso",
        "bucket_reso_steps",
        "bucket_no_upscale",
    }
)


def parse_resolution(value: Any) -> Any:
    """kohya writes ``resolution = "512,512"``, ``"512"``, ``512`` or ``[512, 768]``."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if len(parts) == 1:
            parts = parts * 2
        return tuple(int(p) for p in parts)
    return value


class SubsetOptions(BaseModel):
    """The options a subset takes, also settable on its dataset or under ``[general]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_repeats: int | None = Field(None, ge=1)
    class_tokens: str | None = None
    """Caption for images without a caption file (kohya's DreamBooth-style subsets)."""
    caption_extension: str | None = None
    keep_tokens: int | None = Field(None, ge=0)
    keep_tokens_separator: str | None = None
    shuffle_caption: bool | None = None
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    caption_dropout_rate: float | None = Field(None, ge=0, le=1)
    caption_tag_dropout_rate: float | None = Field(None, ge=0, le=1)
    flip_aug: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _off_only_keys(cls, values: Any) -> Any:
        """``color_aug = false`` and friends ask for nothing; on, they are refused."""
        if not isinstance(values, Mapping):
            return values
        kept = dict(values)
        for key in [k for k in kept if k in OFF_ONLY_KEYS]:
            problem = check_off_only(key, kept.pop(key))
            if problem:
                raise ValueError(problem)
        return kept

    @field_validator("caption_extension")
    @classmethod
    def _dot_extension(cls, value: str | None) -> str | None:
        return value if value is None or value.startswith(".") else f".{value}"


class SubsetConfig(SubsetOptions):
    """One image folder of a kohya dataset definition (``[[datasets.subsets]]``)."""

    image_dir: Path | None = None
    is_reg: bool = False
    metadata_file: Path | None = None
    """kohya's fine-tuning captions: a JSON file ``{"image": {"caption": …, "tags": …}}``;
    an image key is a path, or a name looked up in image_dir."""

    @model_validator(mode="after")
    def _has_images(self) -> SubsetConfig:
        if self.image_dir is None and self.metadata_file is None:
            raise ValueError("a subset needs image_dir (or metadata_file)")
        if self.metadata_file is not None and self.is_reg:
            raise ValueError("a metadata_file subset cannot be a regularisation subset (kohya)")
        return self

    @property
    def name(self) -> str:
        """The subset's name in the metadata (``ss_tag_frequency``): its folder or file."""
        if self.image_dir is not None:
            return self.image_dir.name
        assert self.metadata_file is not None
        return self.metadata_file.stem


class DatasetSection(SubsetOptions):
    """A kohya ``[[datasets]]`` entry: its subsets, and options for all of them."""

    subsets: tuple[SubsetConfig, ...] = Field(min_length=1)
    resolution: tuple[int, int] | None = None
    batch_size: int | None = Field(None, ge=1)
    enable_bucket: bool | None = None
    min_bucket_reso: int | None = Field(None, gt=0)
    max_bucket_reso: int | None = Field(None, gt=0)
    bucket_reso_steps: int | None = Field(None, gt=0)
    bucket_no_upscale: bool | None = None

    @field_validator("resolution", mode="before")
    @classmethod
    def _parse_resolution(cls, value: Any) -> Any:
        return parse_resolution(value)

    def option(self, subset: SubsetConfig, key: str, fallback: Any) -> Any:
        """A subset option by kohya's precedence: subset, dataset, then ``fallback``."""
        for source in (subset, self):
            value = getattr(source, key)
            if value is not None:
                return value
        return fallback


def with_general(datasets: Any, general: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[[datasets]]`` with the ``[general]`` keys filled in where a dataset lacks them."""
    if not isinstance(datasets, list | tuple):
        raise ConfigError("[[datasets]] must be a list of tables")
    return [{**general, **dataset} for dataset in datasets]


def read_dataset_config(path: Path, relative_to: Path | None = None) -> list[dict[str, Any]]:
    """The ``[[datasets]]`` of a separate dataset config file (kohya's ``dataset_config``),
    with its ``[general]`` keys applied; relative paths are tried from the working
    directory, then from the training config's folder."""
    candidates = [Path(path)]
    if relative_to is not None and not Path(path).is_absolute():
        candidates.append(relative_to / path)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(f"dataset_config file not found: {path}")
    try:
        raw = tomllib.loads(found.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"dataset_config {found} is not valid TOML: {error}") from None
    unknown = sorted(set(raw) - {"general", "datasets"})
    if unknown:
        raise ConfigError(
            f"dataset_config {found}: unknown section(s) {unknown}; "
            "expected [general] and [[datasets]]"
        )
    if "datasets" not in raw:
        raise ConfigError(f"dataset_config {found} has no [[datasets]]")
    return with_general(raw["datasets"], raw.get("general", {}))

"""The dataset's folders: every subset with its options resolved (subset > dataset >
general > the training config, as kohya), its images and their captions, and each
image's bucket. A file that cannot be trained on is collected, not raised, so that the
error lists every one of them.

Layout: ``train_data_dir/N_name/`` holds images with same-stem caption files; ``N`` is
the number of repeats per epoch. A subset of a ``[[datasets]]`` definition names its
folder (``image_dir``) or kohya's fine-tuning JSON captions (``metadata_file``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from lab.buckets import BucketAssignment, BucketSpec
from lab.dataset.image import file_is_cut_short
from lab.dataset.rules import IMAGE_SUFFIXES, OTHER_IMAGE_SUFFIXES, is_skipped, oriented_size
from lab.dataset.settings import IngestSettings
from lab.training.config import DatasetSection, SubsetConfig, TrainConfig
from trainer.errors import DatasetError
from trainer.records import CaptionRules, ImageRecord

logger = logging.getLogger(__name__)

_SUBSET_DIR = re.compile(r"^(\d+)_(.*)$")


@dataclass(frozen=True, slots=True)
class SubsetSource:
    """One image folder with every option resolved (subset > dataset > general > config)."""

    subset: SubsetConfig
    dataset: int
    spec: BucketSpec | None
    resolution: tuple[int, int]
    rules: CaptionRules
    flip_aug: bool
    caption_extension: str
    repeats: int


def subset_sources(config: TrainConfig) -> tuple[list[SubsetSource], dict[int, int]]:
    """Every subset with its options resolved, and each dataset's batch size."""
    sources: list[SubsetSource] = []
    batch_sizes: dict[int, int] = {}
    for index, dataset in enumerate(config.datasets):
        batch_sizes[index] = dataset.batch_size or config.train_batch_size
        sources.extend(_resolve(config, dataset, s, index) for s in dataset.subsets)
    folders = _folder_subsets(config)
    if folders:
        plain = DatasetSection(subsets=tuple(folders))
        index = len(config.datasets)
        sources.extend(_resolve(config, plain, s, index) for s in folders)
    return sources, batch_sizes


def _resolve(
    config: TrainConfig, dataset: DatasetSection, subset: SubsetConfig, index: int
) -> SubsetSource:
    def pick(key: str) -> Any:
        return dataset.option(subset, key, getattr(config, key))

    def own(key: str) -> Any:
        value = getattr(dataset, key)
        return getattr(config, key) if value is None else value

    resolution = own("resolution")
    spec = None
    if own("enable_bucket"):
        spec = BucketSpec(
            resolution=resolution,
            min_bucket_reso=own("min_bucket_reso"),
            max_bucket_reso=own("max_bucket_reso"),
            bucket_reso_steps=own("bucket_reso_steps"),
            bucket_no_upscale=own("bucket_no_upscale"),
        )
    rules = CaptionRules(
        shuffle=bool(pick("shuffle_caption")),
        keep_tokens=int(pick("keep_tokens")),
        keep_tokens_separator=str(pick("keep_tokens_separator")),
        prefix=pick("caption_prefix"),
        suffix=pick("caption_suffix"),
        dropout_rate=float(pick("caption_dropout_rate")),
        tag_dropout_rate=float(pick("caption_tag_dropout_rate")),
    )
    extension = str(pick("caption_extension"))
    return SubsetSource(
        subset=subset,
        dataset=index,
        spec=spec,
        resolution=resolution,
        rules=rules,
        flip_aug=bool(pick("flip_aug")),
        caption_extension=extension if extension.startswith(".") else f".{extension}",
        repeats=dataset.option(subset, "num_repeats", 1),
    )


def _folder_subsets(config: TrainConfig) -> list[SubsetConfig]:
    """kohya's ``train_data_dir``/``reg_data_dir`` layout: one subset per ``N_name`` folder."""
    subsets: list[SubsetConfig] = []
    for root, is_reg in ((config.train_data_dir, False), (config.reg_data_dir, True)):
        if root is None:
            continue
        if not root.is_dir():
            raise DatasetError(f"dataset folder not found: {root}")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for folder in folders:
            match = _SUBSET_DIR.match(folder.name)
            if match is None:
                logger.warning("ignoring %s: kohya folders are named N_name", folder)
                continue
            subsets.append(
                SubsetConfig(
                    image_dir=folder,
                    num_repeats=max(1, int(match.group(1))),
                    is_reg=is_reg,
                    class_tokens=match.group(2).strip() or None,
                )
            )
    return subsets


def _folder_captions(source: SubsetSource, problems: list[str]) -> list[tuple[Path, str]]:
    """(image, caption) of a folder subset: same-stem caption files, else class_tokens."""
    subset = source.subset
    assert subset.image_dir is not None
    if not subset.image_dir.is_dir():
        raise DatasetError(f"image folder not found: {subset.image_dir}")
    found = []
    for path in sorted(subset.image_dir.iterdir()):
        if not path.is_file() or is_skipped(path.name):
            continue  # macOS AppleDouble (._x.jpg), hidden files: skipped as kohya does
        suffix = path.suffix.lower()
        if suffix in OTHER_IMAGE_SUFFIXES:
            problems.append(
                f"{path}: {suffix[1:].upper()} is not a training format; use PNG/JPEG/WebP"
            )
            continue
        if suffix not in IMAGE_SUFFIXES:
            continue
        caption_file = path.with_suffix(source.caption_extension)
        if caption_file.exists():
            caption = caption_file.read_text(encoding="utf-8").strip().splitlines()[0:1]
            found.append((path, caption[0].strip() if caption else ""))
        else:
            found.append((path, subset.class_tokens or ""))
    return found


def metadata_captions(
    metadata_file: Path, image_dir: Path | None, problems: list[str]
) -> list[tuple[Path, str]]:
    """kohya's fine-tuning metadata (``metadata_file``): each key is an image path, or a
    name found in ``image_dir`` with an image suffix; the caption is ``caption``, then
    ``tags`` after a ``,`` (sd-scripts' ``FineTuningDataset``)."""
    try:
        entries = json.loads(Path(metadata_file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"metadata_file not found: {metadata_file}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"metadata_file {metadata_file} is not JSON: {error}") from None
    if not isinstance(entries, dict):
        raise DatasetError(f"metadata_file {metadata_file}: expected an object of images")
    found = []
    for key, meta in entries.items():
        path = _metadata_image(str(key), image_dir)
        if path is None:
            problems.append(f"{metadata_file}: no image for {key!r}")
            continue
        meta = meta if isinstance(meta, dict) else {}
        caption, tags = meta.get("caption"), meta.get("tags")
        if caption is None:
            caption = tags
        elif tags:
            caption = f"{caption},{tags}"
        found.append((path, str(caption or "").strip()))
    return found


def _metadata_image(key: str, image_dir: Path | None) -> Path | None:
    direct = Path(key)
    if direct.is_file():
        return direct
    if image_dir is not None:
        for suffix in sorted(IMAGE_SUFFIXES):
            candidate = image_dir / f"{key}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _fixed_assignment(size: tuple[int, int], target: tuple[int, int]) -> BucketAssignment:
    """Without bucketing: scale to cover the training resolution, then centre-crop."""
    scale = max(target[0] / size[0], target[1] / size[1])
    resized = (max(target[0], round(size[0] * scale)), max(target[1], round(size[1] * scale)))
    crop = ((resized[0] - target[0]) // 2, (resized[1] - target[1]) // 2)
    return BucketAssignment(target, resized, crop)


def scan_subset(source: SubsetSource, problems: list[str]) -> list[ImageRecord]:
    """The subset's images; a file that cannot be trained on is added to ``problems``."""
    subset = source.subset
    if subset.metadata_file is not None:
        found = metadata_captions(subset.metadata_file, subset.image_dir, problems)
    else:
        found = _folder_captions(source, problems)
    records = []
    floor = IngestSettings().absolute_min_side
    for path, text in found:
        try:
            with Image.open(path) as image:
                size, label = oriented_size(image), image.format or ""
        except OSError as error:
            cut = "truncated" in str(error).lower()
            problems.append(
                f"{path}: the file is cut short (an incomplete copy?)"
                if cut
                else f"{path}: not a readable image ({error})"
            )
            continue
        if file_is_cut_short(path, label):
            problems.append(f"{path}: the file is cut short (an incomplete copy?)")
            continue
        if min(size) < floor:  # trained (kohya would), but named: import refuses these
            logger.warning(
                "%s: %d×%d is under %d px; dataset import refuses it", path, *size, floor
            )
        spec = source.spec
        try:
            assignment = spec.assign(*size) if spec else _fixed_assignment(size, source.resolution)
        except ValueError as error:
            problems.append(f"{path} ({size[0]}×{size[1]}): {error}")
            continue
        records.append(
            ImageRecord(
                path,
                text,
                subset.name,
                subset.is_reg,
                source.rules,
                source.flip_aug,
                assignment,
                size,
                source.dataset,
            )
        )
    return records

"""The dataset: kohya folders, captions, buckets, and the batches of each epoch.

Layout: ``train_data_dir/N_name/`` holds images with same-stem caption files; ``N`` is
the number of repeats per epoch. A regularisation folder has the same layout; as in
kohya its images are cycled until they match the number of training images (with
repeats), and their loss is weighted by ``prior_loss_weight``.

The order of an epoch depends only on ``(seed, epoch)``, never on earlier epochs, so a
resumed run replays exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from lab.buckets import BucketAssignment, BucketSpec
from lab.captions import join_tags, shuffle_caption, split_fixed, split_tags, tag_frequency
from lab.dataset.image import file_is_cut_short
from lab.dataset.rules import IMAGE_SUFFIXES, OTHER_IMAGE_SUFFIXES, is_skipped, oriented_size
from lab.dataset.settings import IngestSettings
from lab.training.config import DatasetSection, SubsetConfig, TrainConfig
from trainer.errors import DatasetError

logger = logging.getLogger(__name__)

_SUBSET_DIR = re.compile(r"^(\d+)_(.*)$")


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


@dataclass(frozen=True, slots=True)
class SubsetSummary:
    """What the metadata reports per folder (``ss_dataset_dirs``)."""

    name: str
    repeats: int
    image_count: int
    is_reg: bool


@dataclass
class TrainingData:
    """All images, and the deterministic batches of each epoch."""

    records: list[ImageRecord]
    samples: list[int]
    """Record indices drawn once per epoch: training images × repeats, then reg images."""
    batch_size: int
    subsets: list[SubsetSummary] = field(default_factory=list)
    batch_sizes: dict[int, int] = field(default_factory=dict)
    """Per dataset (``[[datasets]]`` ``batch_size``); default ``batch_size``."""

    def _groups(self) -> dict[tuple[int, tuple[int, int]], list[int]]:
        """The sample indices per (dataset, bucket): what one batch may hold."""
        groups: dict[tuple[int, tuple[int, int]], list[int]] = {}
        for index in self.samples:
            record = self.records[index]
            groups.setdefault((record.dataset, record.bucket), []).append(index)
        return groups

    def _size(self, dataset: int) -> int:
        return self.batch_sizes.get(dataset, self.batch_size)

    @property
    def num_train_images(self) -> int:
        """kohya's ``ss_num_train_images``: training images counted with their repeats."""
        return sum(1 for i in self.samples if not self.records[i].is_reg)

    @property
    def num_reg_images(self) -> int:
        return sum(1 for r in self.records if r.is_reg)

    @property
    def captions_static(self) -> bool:
        return all(r.rules.is_static for r in self.records)

    def batches_per_epoch(self) -> int:
        return sum(
            -(-len(members) // self._size(key[0])) for key, members in self._groups().items()
        )

    def epoch_batches(self, seed: int, epoch: int) -> list[list[int]]:
        """The batches (record indices) of ``epoch``; one bucket per batch, shuffled."""
        rng = random.Random(f"batches:{seed}:{epoch}")
        groups = self._groups()
        batches: list[list[int]] = []
        for key in sorted(groups):
            members, size = groups[key], self._size(key[0])
            rng.shuffle(members)
            batches.extend(members[i : i + size] for i in range(0, len(members), size))
        rng.shuffle(batches)
        return batches

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's ``ss_tag_frequency``: per folder, how many captions use each tag."""
        captions: dict[str, list[list[str]]] = {}
        for record in self.records:
            captions.setdefault(record.subset, []).append(split_tags(record.caption))
        return {name: tag_frequency(tags) for name, tags in captions.items()}

    def bucket_counts(self) -> dict[tuple[int, int], int]:
        return dict(sorted(Counter(self.records[i].bucket for i in self.samples).items()))


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


def load_training_data(config: TrainConfig) -> TrainingData:
    """Scan the configured folders, assign buckets, and build the per-epoch sample list."""
    sources, batch_sizes = _subset_sources(config)
    records: list[ImageRecord] = []
    summaries: list[SubsetSummary] = []
    train_samples: list[int] = []
    reg_indices: list[int] = []
    problems: list[str] = []
    for source in sources:
        subset = source.subset
        found = _scan_subset(source, problems)
        if not found:
            logger.warning("no images in %s", subset.image_dir or subset.metadata_file)
            continue
        start = len(records)
        records.extend(found)
        indices = list(range(start, len(records)))
        summaries.append(SubsetSummary(subset.name, source.repeats, len(found), subset.is_reg))
        if subset.is_reg:
            reg_indices.extend(i for _ in range(source.repeats) for i in indices)
        else:
            train_samples.extend(i for _ in range(source.repeats) for i in indices)
    if problems:
        # Before any training: every bad file at once, so one fix covers them all.
        raise DatasetError(
            f"{len(problems)} image(s) cannot be trained on; fix or remove them: "
            + "; ".join(problems)
        )
    if not train_samples:
        raise DatasetError("the dataset has no training images (only regularisation or none)")
    samples = list(train_samples)
    if reg_indices:
        # kohya: reg images are cycled or cut to the number of training images.
        samples.extend(reg_indices[i % len(reg_indices)] for i in range(len(train_samples)))
    data = TrainingData(records, samples, config.train_batch_size, summaries, batch_sizes)
    logger.info(
        "dataset: %d images (%d training samples per epoch), buckets %s",
        len(records),
        len(samples),
        data.bucket_counts(),
    )
    return data


def _subset_sources(config: TrainConfig) -> tuple[list[SubsetSource], dict[int, int]]:
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


def _scan_subset(source: SubsetSource, problems: list[str]) -> list[ImageRecord]:
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


def load_pixels(record: ImageRecord, *, flip: bool) -> torch.Tensor:
    """The image resized to cover its bucket, centre-cropped, in [-1, 1], CHW float32."""
    with Image.open(record.path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode in ("RGBA", "LA") or "transparency" in image.info:
            # Transparent pixels become white, as kohya does, not black.
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        image = image.convert("RGB")
        assignment = record.assignment
        if image.size != assignment.resized:
            downscale = assignment.resized[0] < image.size[0]
            resample = Image.Resampling.BOX if downscale else Image.Resampling.LANCZOS
            image = image.resize(assignment.resized, resample)
        image = image.crop(assignment.crop_box)
        if flip:
            image = ImageOps.mirror(image)
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    pixels = data.view(image.size[1], image.size[0], 3).permute(2, 0, 1).float()
    return pixels / 127.5 - 1.0

"""The dataset: kohya folders, captions, buckets, and the batches of each epoch.

Layout: ``train_data_dir/N_name/`` holds images with same-stem caption files; ``N`` is
the number of repeats per epoch. A regularisation folder has the same layout; as in
kohya its images are cycled until they match the number of training images (with
repeats), and their loss is weighted by ``prior_loss_weight``.

The order of an epoch depends only on ``(seed, epoch)``, never on earlier epochs, so a
resumed run replays exactly the batches an uninterrupted one would have seen.
"""

import logging
import random
from collections import Counter
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageOps

from lab.captions import split_tags, tag_frequency
from lab.training.config import SubsetConfig, TrainConfig
from trainer.errors import DatasetError
from trainer.folders import scan_subset, subset_sources
from trainer.records import CaptionRules, ImageRecord

__all__ = ["CaptionRules", "ImageRecord", "TrainingData", "load_pixels", "load_training_data"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SubsetSummary:
    """What the metadata reports per folder (``ss_dataset_dirs``)."""

    name: str
    repeats: int
    image_count: int
    is_reg: bool
    config: SubsetConfig | None = None
    """The subset as configured (its caption options; ``ss_datasets``)."""


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


def load_training_data(config: TrainConfig) -> TrainingData:
    """Scan the configured folders, assign buckets, and build the per-epoch sample list."""
    sources, batch_sizes = subset_sources(config)
    records: list[ImageRecord] = []
    summaries: list[SubsetSummary] = []
    train_samples: list[int] = []
    reg_indices: list[int] = []
    problems: list[str] = []
    for source in sources:
        subset = source.subset
        found = scan_subset(source, problems)
        if not found:
            logger.warning("no images in %s", subset.image_dir or subset.metadata_file)
            continue
        start = len(records)
        records.extend(found)
        indices = list(range(start, len(records)))
        summaries.append(
            SubsetSummary(subset.name, source.repeats, len(found), subset.is_reg, subset)
        )
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

"""Dataset scanning, captions and batches (kohya folder rules, lab.buckets assignment)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lab.buckets import BucketSpec
from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.data import CaptionRules, load_pixels, load_training_data
from trainer.errors import DatasetError
from trainer.tiny import make_image


def _data(model: Path, data: Path, tmp: Path, **extra: object):
    return load_training_data(build_config(base_values(model, data, tmp / "o", **extra)))


def test_kohya_folders_repeats_and_captions(dataset: Path, tmp_path: Path) -> None:
    data = _data(Path("/m"), dataset, tmp_path)
    assert len(data.records) == 4
    assert data.num_train_images == 8  # "2_sks": 4 images × 2 repeats
    assert data.records[0].caption == "sks dog, red ball, grass"
    assert {s.name: s.repeats for s in data.subsets} == {"2_sks": 2}


def test_missing_caption_uses_the_folder_token(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "3_ohwx person"
    folder.mkdir(parents=True)
    make_image(folder / "a.png", (64, 64), seed=0)
    data = _data(Path("/m"), tmp_path / "data", tmp_path)
    assert data.records[0].caption == "ohwx person"
    assert data.num_train_images == 3


def test_buckets_come_from_lab_buckets(dataset: Path, tmp_path: Path) -> None:
    data = _data(Path("/m"), dataset, tmp_path)
    spec = BucketSpec((64, 64), min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=32)
    for record in data.records:
        from PIL import Image

        with Image.open(record.path) as image:
            assert record.assignment == spec.assign(*image.size)
    assert data.bucket_counts() == {(64, 64): 4, (96, 32): 4}
    pixels = load_pixels(data.records[1], flip=False)
    assert pixels.shape == (3, 32, 96) and pixels.min() >= -1 and pixels.max() <= 1
    mirrored = load_pixels(data.records[1], flip=True)
    assert torch.equal(mirrored, pixels.flip(-1))


def test_batches_never_mix_buckets_and_depend_only_on_seed_and_epoch(
    dataset: Path, tmp_path: Path
) -> None:
    data = _data(Path("/m"), dataset, tmp_path, train_batch_size=3)
    batches = data.epoch_batches(seed=5, epoch=0)
    for batch in batches:
        assert len({data.records[i].bucket for i in batch}) == 1
    assert sorted(i for b in batches for i in b) == sorted(data.samples)
    assert len(batches) == data.batches_per_epoch() == 4  # ceil(4/3) per bucket
    assert data.epoch_batches(seed=5, epoch=0) == batches
    assert data.epoch_batches(seed=5, epoch=1) != batches


def test_regularisation_images_are_balanced_and_weighted(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    reg = tmp_path / "reg" / "1_dog"
    reg.mkdir(parents=True)
    make_image(reg / "r0.png", (64, 64), seed=7)
    data = _data(Path("/m"), dataset, tmp_path, reg_data_dir=str(tmp_path / "reg"))
    assert data.num_train_images == 8
    assert data.num_reg_images == 1
    # kohya: the single reg image is cycled to as many samples as there are train samples.
    assert sum(1 for i in data.samples if data.records[i].is_reg) == 8


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "data" / "1_x").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no training images"):
        _data(Path("/m"), tmp_path / "data", tmp_path)


def test_keep_tokens_and_shuffle() -> None:
    rules = CaptionRules(shuffle=True, keep_tokens=1)
    caption = "sks, a, b, c, d, e, f"
    results = {rules.apply(caption, random.Random(seed)) for seed in range(20)}
    assert len(results) > 1
    for result in results:
        tags = result.split(", ")
        assert tags[0] == "sks" and sorted(tags[1:]) == ["a", "b", "c", "d", "e", "f"]


def test_keep_tokens_separator() -> None:
    rules = CaptionRules(shuffle=True, keep_tokens_separator="|||")
    result = rules.apply("sks, woman ||| a, b, c", random.Random(1))
    assert result.startswith("sks, woman, ")


def test_caption_dropout_prefix_and_tag_dropout() -> None:
    always = CaptionRules(dropout_rate=1.0)
    assert always.apply("a, b", random.Random(0)) == ""
    assert CaptionRules(prefix="pre,", suffix=", post").apply("a", random.Random(0)) == (
        "pre, a , post"
    )
    dropped = CaptionRules(keep_tokens=1, tag_dropout_rate=0.5)
    lengths = {
        len(dropped.apply("k, a, b, c, d, e", random.Random(s)).split(", ")) for s in range(30)
    }
    assert min(lengths) >= 1 and len(lengths) > 1
    assert CaptionRules().is_static and not CaptionRules(shuffle=True).is_static

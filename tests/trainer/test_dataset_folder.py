"""The trainer's folder scan: macOS side files, cut-short images and images that fit no
bucket are handled before training starts, naming each file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.data import load_training_data
from trainer.errors import DatasetError
from trainer.tiny import make_image


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "2_sks"
    folder.mkdir(parents=True)
    for index in range(2):
        make_image(folder / f"IMG_{index}.jpg", (64, 64), seed=index)
    return folder


def _load(tmp_path: Path, **extra: object):
    return load_training_data(
        build_config(base_values(Path("/m"), tmp_path / "data", tmp_path / "o", **extra))
    )


def test_macos_appledouble_files_are_skipped(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "._IMG_0.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 200)
    (folder / ".DS_Store").write_bytes(b"\x00" * 10)
    data = _load(tmp_path)
    assert sorted(r.path.name for r in data.records) == ["IMG_0.jpg", "IMG_1.jpg"]


def test_cut_short_and_unreadable_images_are_all_listed_before_training(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    make_image(folder / "IMG_0.jpg", (256, 256), seed=3)
    whole = (folder / "IMG_0.jpg").read_bytes()
    (folder / "IMG_0.jpg").write_bytes(whole[: len(whole) * 3 // 5])  # header intact
    (folder / "IMG_9.png").write_bytes(b"not an image at all" * 10)
    with pytest.raises(DatasetError) as caught:
        _load(tmp_path)
    message = str(caught.value)
    assert message.startswith("2 image(s) cannot be trained on")
    assert "IMG_0.jpg: the file is cut short" in message
    assert "IMG_9.png: not a readable image" in message


def test_an_image_that_fits_no_bucket_is_named(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    make_image(folder / "wide.png", (128, 64), seed=5)
    with pytest.raises(DatasetError, match=r"wide\.png \(128×64\)"):
        _load(tmp_path, bucket_no_upscale=True, min_bucket_reso=64, bucket_reso_steps=64)


def _rotated_jpeg(path: Path) -> None:
    """Stored 128×64, shown 64×128 (EXIF orientation 6: rotate 90° clockwise)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (128, 64), (200, 30, 30)).save(path, exif=exif)


def test_check_and_trainer_agree_on_rotation_formats_and_caption_files(tmp_path: Path) -> None:
    from lab.buckets import BucketSpec
    from lab.dataset.report import build_report

    folder = _folder(tmp_path)
    _rotated_jpeg(folder / "rotated.jpg")
    (folder / "rotated.caption").write_text("sks, standing", encoding="utf-8")
    spec = BucketSpec(
        resolution=(64, 64), min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=32
    )
    report = build_report(tmp_path / "data", spec=spec)
    assert report.unreadable == []  # a .caption file is a caption, not a broken image
    checked = {f.path.rsplit("/", 1)[-1]: f for f in report.images}
    assert checked["rotated.jpg"].caption == "sks, standing"
    data = _load(tmp_path, caption_extension=".caption")
    trained = {r.path.name: r for r in data.records}
    assert trained["rotated.jpg"].bucket == checked["rotated.jpg"].bucket
    assert trained["rotated.jpg"].bucket[1] > trained["rotated.jpg"].bucket[0]  # portrait


def test_formats_import_refuses_are_refused_by_the_trainer(tmp_path: Path) -> None:
    from PIL import Image

    folder = _folder(tmp_path)
    Image.new("RGB", (64, 64)).save(folder / "old.bmp")
    with pytest.raises(DatasetError) as caught:
        _load(tmp_path)
    assert "old.bmp: BMP is not a training format" in str(caught.value)


def test_an_image_under_imports_floor_is_named(tmp_path: Path, caplog) -> None:
    folder = _folder(tmp_path)
    make_image(folder / "tiny.png", (48, 48), seed=2)
    with caplog.at_level("WARNING", logger="trainer.data"):
        data = _load(tmp_path)
    assert "tiny.png" in {r.path.name for r in data.records}  # trained, as kohya would
    assert "tiny.png: 48×48 is under 64 px; dataset import refuses it" in caplog.text


def test_check_names_the_images_the_trainer_does_not_read(tmp_path: Path) -> None:
    from lab.dataset.report import build_report

    folder = _folder(tmp_path)
    (folder / "raw").mkdir()
    make_image(folder / "raw" / "original.png", (64, 64), seed=7)
    make_image(tmp_path / "data" / "loose.png", (64, 64), seed=8)
    report = build_report(tmp_path / "data")
    trained = {r.path.name for r in _load(tmp_path).records}
    assert trained == {"IMG_0.jpg", "IMG_1.jpg"}
    assert sorted(report.not_trained) == ["2_sks/raw/original.png", "loose.png"]
    assert "images_not_trained" in {code for code, _ in report.warnings}

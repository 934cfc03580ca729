"""The health report and the kohya export."""

from __future__ import annotations

import shutil

import pytest

from lab.buckets import BucketSpec
from lab.dataset.export import ExportError, choose_repeats, export_kohya, kohya_folder_name
from lab.dataset.report import build_report, parse_kohya_folder
from lab.families import BaseFamily
from tests.lab import corpus


def make_dataset(root, sizes, captions=None):
    root.mkdir(parents=True, exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        corpus.photo(w, h, seed=100 + i).save(root / f"img{i:02d}.jpg", quality=90)
        caption = (captions or {}).get(i)
        if caption is not None:
            (root / f"img{i:02d}.txt").write_text(caption, encoding="utf-8")


def warning_codes(report):
    return {code for code, _ in report.warnings}


def test_report_counts_buckets_and_captions(tmp_path):
    sizes = [(512, 512), (768, 512), (512, 768), (300, 900), (1024, 1024), (640, 480)]
    captions = {0: "ohwx, woman, smile", 1: "woman, ohwx", 2: "smile, outdoors", 4: "ohwx"}
    make_dataset(tmp_path / "ds", sizes, captions)
    report = build_report(tmp_path / "ds", family=BaseFamily.SD15, trigger="ohwx")
    data = report.as_dict()
    assert data["counts"]["images"] == 6 and data["counts"]["captioned"] == 4
    spec = BucketSpec.square(512, max_bucket_reso=1024)
    for image, (w, h) in zip(data["images"], sizes, strict=True):
        assert (image["width"], image["height"]) == (w, h)
        assert tuple(image["bucket"]) == spec.assign(w, h).bucket
    assert sum(data["buckets"].values()) == 6
    assert sum(data["resolution_histogram"].values()) == 6
    assert data["resolution_histogram"]["256-383"] == 1  # the 300×900 image
    assert data["captions"]["missing"] == ["img03.jpg", "img05.jpg"]
    assert data["captions"]["without_trigger"] == ["img02.jpg"]
    assert data["tag_frequency"]["ohwx"] == 3
    codes = warning_codes(report)
    assert {"too_few_images", "captions_missing", "trigger_missing"} <= codes


def test_report_resolution_and_family_change_the_buckets(tmp_path):
    make_dataset(tmp_path / "ds", [(1200, 800)])
    sd15 = build_report(tmp_path / "ds", family=BaseFamily.SD15)
    sdxl = build_report(tmp_path / "ds", family=BaseFamily.SDXL)
    custom = build_report(tmp_path / "ds", family=BaseFamily.SD15, resolution=768)
    assert sd15.images[0].bucket == BucketSpec.square(512).assign(1200, 800).bucket
    assert (
        sdxl.images[0].bucket
        == BucketSpec.square(1024, max_bucket_reso=2048).assign(1200, 800).bucket
    )
    assert custom.images[0].bucket[0] * custom.images[0].bucket[1] > 512 * 512
    assert sdxl.images[0].upscaled  # 800 px short side into a 1024-class bucket


def test_report_duplicates_aspect_and_small_image_warnings(tmp_path):
    make_dataset(tmp_path / "ds", [(600, 600)] * 10 + [(200, 200)] * 5)
    shutil.copy(tmp_path / "ds" / "img00.jpg", tmp_path / "ds" / "copy.jpg")
    near = corpus.photo(600, 600, seed=101).point(lambda v: max(0, v - 5))
    near.save(tmp_path / "ds" / "near.jpg", quality=85)
    (tmp_path / "ds" / "junk.jpg").write_bytes(b"<html>")
    (tmp_path / "ds" / "lonely.txt").write_text("caption without image")
    report = build_report(tmp_path / "ds", family=BaseFamily.SD15)
    assert report.duplicates == [("copy.jpg", "img00.jpg")]
    assert any({"near.jpg", "img01.jpg"} == set(p[:2]) for p in report.near_duplicates)
    assert [path for path, _ in report.unreadable] == ["junk.jpg"]
    assert report.orphan_captions == ["lonely.txt"]
    codes = warning_codes(report)
    assert {"duplicates", "near_duplicates", "unreadable_files", "aspect_dominates"} <= codes
    assert "many_small_images" in codes  # 5 of 17 under 384 px: over 25 %


def test_trigger_inferred_from_kohya_folder(tmp_path):
    assert parse_kohya_folder("10_ohwx woman") == (10, "ohwx", "woman")
    assert parse_kohya_folder("ohwx") is None
    make_dataset(tmp_path / "train" / "5_ohwx woman", [(512, 512)], {0: "woman"})
    report = build_report(tmp_path / "train")
    assert (report.trigger, report.class_token) == ("ohwx", "woman")
    assert report.without_trigger() == ["5_ohwx woman/img00.jpg"]


def test_export_writes_the_kohya_layout(tmp_path):
    make_dataset(tmp_path / "ds", [(512, 512)] * 3, {0: "smile, ohwx", 1: "woman, outdoors"})
    result = export_kohya(tmp_path / "ds", tmp_path / "train", "ohwx", "woman", target_steps=600)
    assert result.repeats == choose_repeats(3, 600, 10) == 20
    assert result.folder == tmp_path / "train" / "20_ohwx woman"
    files = sorted(p.name for p in result.folder.iterdir())
    assert files == [f"img0{i}.{ext}" for i in range(3) for ext in ("jpg", "txt")]
    captions = [(result.folder / f"img0{i}.txt").read_text() for i in range(3)]
    assert captions == ["ohwx, woman, smile", "ohwx, woman, outdoors", "ohwx, woman"]
    # The trainer-side parser reads the folder back.
    assert parse_kohya_folder(result.folder.name) == (20, "ohwx", "woman")
    with pytest.raises(ExportError):
        export_kohya(tmp_path / "ds", tmp_path / "train", "ohwx", "woman", repeats=20)


def test_folder_names_and_repeats_are_validated():
    assert kohya_folder_name(3, "ohwx") == "3_ohwx"
    for bad in ("", "two words", "a/b", "..\\x"):
        with pytest.raises(ExportError):
            kohya_folder_name(1, bad, "woman")
    assert choose_repeats(100, 10, 10) == 1  # never zero
    with pytest.raises(ValueError):
        choose_repeats(0, 100, 10)

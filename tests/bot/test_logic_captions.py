"""`bot/exts/captions/_logic.py` as pure functions: which texts an upload holds, and the
caps that keep a small upload from reading as gigabytes of caption."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.exts.captions._logic import caption_texts
from lab.dataset.reasons import DatasetError, Reason
from lab.dataset.settings import IngestSettings
from tests.lab.corpus import zip_of


def _file(tmp_path: Path, name: str, data: bytes) -> tuple[str, Path]:
    path = tmp_path / f"upload-{name}"
    path.write_bytes(data)
    return name, path


def _zip(tmp_path: Path, name: str, entries: dict[str, bytes]) -> tuple[str, Path]:
    return _file(tmp_path, name, zip_of(entries))


def test_captions_are_read_from_text_files_and_zips_and_other_files_are_ignored(tmp_path):
    files = [
        _file(tmp_path, "a.txt", "\ufeffsks, dog, red ball".encode()),
        _file(tmp_path, "photo.png", b"\x89PNG not a caption"),
        _zip(tmp_path, "more.zip", {"b.txt": b"sks, dog", "c.TXT": b"sks, running"}),
    ]
    texts = caption_texts(files, IngestSettings())
    assert texts == {
        "a.txt": "sks, dog, red ball",  # the BOM is dropped
        "more.zip/b.txt": "sks, dog",
        "more.zip/c.TXT": "sks, running",
    }


def test_one_caption_over_its_cap_is_refused_with_its_name(tmp_path):
    settings = IngestSettings(caption_max_bytes=100)
    files = [_file(tmp_path, "ok.txt", b"sks"), _file(tmp_path, "long.txt", b"x" * 101)]
    with pytest.raises(DatasetError) as refused:
        caption_texts(files, settings)
    assert refused.value.code == Reason.CAPTION_TOO_LARGE
    assert "long.txt" in str(refused.value)


def test_the_captions_of_one_upload_stop_at_the_upload_budget(tmp_path):
    """Each caption is under its own cap, together they pass the upload's budget."""
    settings = IngestSettings(caption_max_bytes=1000, caption_upload_max_bytes=2500)
    entries = {f"{i}.txt": b"y" * 900 for i in range(3)}
    with pytest.raises(DatasetError) as refused:
        caption_texts([_zip(tmp_path, "all.zip", entries)], settings)
    assert refused.value.code == Reason.CAPTION_TOO_LARGE
    assert "in total" in str(refused.value)
    two = {f"{i}.txt": b"y" * 900 for i in range(2)}
    assert len(caption_texts([_zip(tmp_path, "two.zip", two)], settings)) == 2


def test_a_small_zip_inflating_to_megabytes_of_caption_is_refused_as_too_large(tmp_path):
    bomb = _zip(tmp_path, "bomb.zip", {"huge.txt": b"a" * (8 * 2**20)})
    assert bomb[1].stat().st_size < 64 * 1024
    with pytest.raises(DatasetError) as refused:
        caption_texts([bomb], IngestSettings())
    assert refused.value.code == Reason.CAPTION_TOO_LARGE

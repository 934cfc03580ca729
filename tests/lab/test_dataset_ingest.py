"""Batches: every good file accepted, every bad one refused, nothing of it on disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from lab.dataset.ingest import CaptionPolicy, FolderStore, ingest
from lab.dataset.reasons import Reason, Warn
from lab.dataset.settings import IngestSettings
from lab.dataset.sources import from_folder, from_path, from_uploads
from lab.families import BaseFamily
from tests.lab import corpus


def good_files() -> dict[str, bytes]:
    """Awkward-but-acceptable uploads, each a distinct picture."""
    return {
        "photo.jpg": corpus.encode(corpus.photo(seed=10), "JPEG"),
        "cmyk.jpg": corpus.encode(corpus.photo(seed=11).convert("CMYK"), "JPEG"),
        "grey16.png": corpus.png_grey16(),
        "rgb48.png": corpus.png_rgb48(),
        "palette.png": corpus.palette_with_transparency(),
        "rgba.png": corpus.rgba_half_transparent(),
        "rotated.jpg": corpus.exif_rotated(),
        "wide.jpg": corpus.encode(corpus.photo(3600, 900, seed=12), "JPEG"),
        "lossy.webp": corpus.encode(corpus.photo(seed=13), "WEBP"),
        "anim.webp": corpus.animated("WEBP"),
        "grey.jpg": corpus.encode(corpus.photo(seed=14).convert("L"), "JPEG"),
    }


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def stored_files(dest: Path) -> set[str]:
    return {p.name for p in dest.iterdir()} if dest.exists() else set()


@pytest.mark.parametrize("workers", [1, 2])
def test_mixed_folder_batch(tmp_path, workers):
    good = good_files()
    hostile = {name: data for name, (data, _code) in corpus.hostile_files().items()}
    src = tmp_path / "src"
    write_tree(src, {**good, **{f"bad/{n}": d for n, d in hostile.items()}})
    write_tree(src, {"photo.txt": b"\xef\xbb\xbfohwx,  woman,,smiling ", "bad/cut.txt": b"cap"})
    dest = tmp_path / "dest"
    settings = IngestSettings(workers=workers)
    result = ingest(from_folder(src, settings), FolderStore(dest), settings, family=BaseFamily.SD15)

    assert sorted(a.source for a in result.accepted) == sorted(good)
    expected = {f"bad/{n}": code for n, (_d, code) in corpus.hostile_files().items()}
    assert {r.source: str(r.code) for r in result.rejected} == expected
    # Exactly the accepted images and their captions are on disk: nothing else.
    on_disk = stored_files(dest)
    assert on_disk == {a.stored for a in result.accepted} | {
        a.caption_stored for a in result.accepted if a.caption_stored
    }
    for accepted in result.accepted:
        data = (dest / accepted.stored).read_bytes()
        assert hashlib.sha256(data).hexdigest() == accepted.sha256
        image = Image.open(io.BytesIO(data))
        assert image.mode == "RGB" and image.size == (accepted.width, accepted.height)
        assert max(image.size) <= 3000
    photo = next(a for a in result.accepted if a.source == "photo.jpg")
    assert (dest / photo.caption_stored).read_text() == "ohwx, woman, smiling"
    # JSON round-trips with the documented keys.
    payload = json.loads(json.dumps(result.as_dict()))
    assert set(payload) == {"accepted", "rejected", "near_duplicates", "warnings", "summary"}
    assert set(payload["accepted"][0]) >= {"source", "stored", "sha256", "width", "height"}
    assert set(payload["rejected"][0]) == {"source", "code", "message"}
    assert payload["summary"]["rejected"] == len(expected)


def test_zip_batch_with_captions_and_hostile_entries(tmp_path):
    png = corpus.encode(corpus.photo(seed=20), "PNG")
    upload = corpus.zip_of(
        {
            "set/a.png": png,
            "set/a.txt": b"ohwx, woman",
            "set/b.jpg": corpus.encode(corpus.photo(seed=21), "JPEG"),
            "set/b.txt": b"\x00\x01binary",
            "set/c.jpg": corpus.encode(corpus.photo(seed=22), "JPEG"),
            "set/c.txt": ("é" * 20_000).encode(),
            "set/d.jpg": corpus.encode(corpus.photo(seed=23), "JPEG"),
            "set/d.txt": "caf\xe9".encode("latin-1"),
            "../escape.png": png,
            "nested.zip": corpus.zip_of({"x.png": png}),
            "set/orphan.txt": b"no image",
        }
    )
    src = tmp_path / "upload.zip"
    src.write_bytes(upload)
    dest = tmp_path / "dest"
    result = ingest(from_path(src), FolderStore(dest))
    codes = {r.source: r.code for r in result.rejected}
    assert codes == {
        "upload.zip/set/b.txt": Reason.CAPTION_BINARY,
        "upload.zip/set/c.txt": Reason.CAPTION_TOO_LARGE,
        "upload.zip/set/d.txt": Reason.CAPTION_ENCODING,
        "upload.zip/../escape.png": Reason.ZIP_SLIP,
        "upload.zip/nested.zip": Reason.NESTED_ARCHIVE,
    }
    assert sorted(a.source for a in result.accepted) == [
        f"upload.zip/set/{n}" for n in ("a.png", "b.jpg", "c.jpg", "d.jpg")
    ]
    captions = {a.source: a.caption for a in result.accepted}
    assert captions["upload.zip/set/a.png"] == "ohwx, woman"
    assert captions["upload.zip/set/b.jpg"] is None  # its caption was refused
    warned = {(w.source, w.code) for w in result.warnings}
    assert ("upload.zip/set/orphan.txt", Warn.CAPTION_WITHOUT_IMAGE) in warned
    assert ("upload.zip/set/b.jpg", Warn.CAPTION_MISSING) in warned
    assert not any(name.startswith(".tmp") for name in stored_files(dest))


def test_exact_and_near_duplicates(tmp_path):
    base = corpus.photo(seed=30)
    jpeg = corpus.encode(base, "JPEG", quality=95)
    slightly_darker = base.point(lambda v: max(0, v - 6))
    files = [
        ("one.jpg", jpeg),
        ("same-bytes.jpg", jpeg),
        ("lossless.png", corpus.encode(base, "PNG")),
        ("lossless.webp", corpus.encode(base, "WEBP", lossless=True)),
        ("darker.jpg", corpus.encode(slightly_darker, "JPEG", quality=90)),
        ("other.jpg", corpus.encode(corpus.photo(seed=31), "JPEG")),
    ]
    dest = tmp_path / "d"
    result = ingest(from_uploads(files), FolderStore(dest), IngestSettings(workers=1))
    rejected = {r.source: r.code for r in result.rejected}
    # Same upload twice; and a PNG and a lossless WebP of the same pixels normalise to
    # the same PNG bytes.
    assert rejected == {"same-bytes.jpg": Reason.DUPLICATE, "lossless.webp": Reason.DUPLICATE}
    assert "one.jpg" in next(r.message for r in result.rejected if r.source == "same-bytes.jpg")
    pairs = {frozenset(p[:2]) for p in result.near_duplicates}
    assert frozenset({"one.jpg", "darker.jpg"}) in pairs
    assert frozenset({"one.jpg", "lossless.png"}) in pairs
    assert not any("other.jpg" in pair for pair in pairs)
    assert all(0 <= p[2] <= 6 for p in result.near_duplicates)
    # Importing again: everything already stored is a duplicate, nothing is rewritten.
    store = FolderStore(dest)
    again = ingest(from_uploads(files[:1]), store, known=store.known())
    assert [r.code for r in again.rejected] == [Reason.DUPLICATE]


def test_trigger_checked_or_enforced(tmp_path):
    files = [
        ("a.png", corpus.encode(corpus.photo(seed=40), "PNG")),
        ("a.txt", b"woman, ohwx, red hair"),
        ("b.png", corpus.encode(corpus.photo(seed=41), "PNG")),
        ("b.txt", b"smiling"),
        ("c.png", corpus.encode(corpus.photo(seed=42), "PNG")),
    ]
    checked = ingest(
        from_uploads(files), FolderStore(tmp_path / "1"), captions=CaptionPolicy("ohwx", "woman")
    )
    warned = {(w.source, w.code) for w in checked.warnings}
    assert ("a.png", Warn.TRIGGER_NOT_FIRST) in warned
    assert ("b.png", Warn.TRIGGER_MISSING) in warned
    assert ("c.png", Warn.CAPTION_MISSING) in warned
    enforced = ingest(
        from_uploads(files),
        FolderStore(tmp_path / "2"),
        captions=CaptionPolicy("ohwx", "woman", enforce=True),
    )
    captions = {a.source: a.caption for a in enforced.accepted}
    assert captions == {
        "a.png": "ohwx, woman, red hair",
        "b.png": "ohwx, woman, smiling",
        "c.png": "ohwx, woman",
    }


def test_symlinks_and_system_files_in_folders(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "real.png").write_bytes(corpus.encode(corpus.photo(), "PNG"))
    secret = tmp_path / "secret.png"
    secret.write_bytes(corpus.encode(corpus.photo(seed=2), "PNG"))
    os.symlink(secret, src / "link.png")
    (src / ".DS_Store").write_bytes(b"\x00\x00")
    result = ingest(from_folder(src), FolderStore(tmp_path / "d"))
    assert [a.source for a in result.accepted] == ["real.png"]
    assert [(r.source, r.code) for r in result.rejected] == [("link.png", Reason.SYMLINK)]
    assert [w.code for w in result.warnings if w.source == ".DS_Store"] == [
        Warn.SKIPPED_SYSTEM_FILE
    ]


def test_undecodable_file_names_in_a_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    raw = os.fsencode(src) + b"/caf\xe9.png"
    with open(raw, "wb") as handle:
        handle.write(corpus.encode(corpus.photo(), "PNG"))
    result = ingest(from_folder(src), FolderStore(tmp_path / "d"))
    (accepted,) = result.accepted
    assert accepted.source == "caf\ufffd.png"
    json.dumps(result.as_dict())


def test_folder_file_count_cap(tmp_path):
    src = tmp_path / "src"
    write_tree(src, {f"{i}.txt": b"x" for i in range(5)})
    items = list(from_folder(src, IngestSettings(folder_max_files=3)))
    assert items[-1].code is Reason.TOO_MANY_ENTRIES and len(items) == 4


def test_a_custom_store_receives_content_addressed_writes():
    calls = []

    def store(key: str, data: bytes, ext: str) -> str:
        calls.append((key, ext, hashlib.sha256(data).hexdigest()))
        return f"mem://{key}.{ext}"

    files = [("x.png", corpus.encode(corpus.photo(), "PNG")), ("x.txt", b"tag")]
    result = ingest(from_uploads(files), store)
    (accepted,) = result.accepted
    assert accepted.stored == f"mem://{accepted.sha256}.png"
    assert calls[0] == (accepted.sha256, "png", accepted.sha256)
    assert calls[1][:2] == (accepted.sha256, "txt")


def test_storage_adapter_puts_content_addressed_keys(tmp_path):
    from lab.dataset.ingest import StorageStore
    from lab.storage import LocalStorage

    storage = LocalStorage(tmp_path / "store")
    files = [("x.png", corpus.encode(corpus.photo(), "PNG")), ("x.txt", b"ohwx")]
    result = ingest(from_uploads(files), StorageStore(storage, "datasets/7"))
    (accepted,) = result.accepted
    assert accepted.stored == f"datasets/7/{accepted.sha256}.png"
    assert storage.get_bytes(f"datasets/7/{accepted.sha256}.txt") == b"ohwx"
    assert hashlib.sha256(storage.get_bytes(accepted.stored)).hexdigest() == accepted.sha256


def test_near_duplicate_distance_is_a_setting(tmp_path):
    base = corpus.photo(seed=50)
    marked = base.copy()
    marked.paste((0, 0, 0), (0, 0, 30, 30))  # a small logo: a few bits of the hash move
    files = [("a.jpg", corpus.encode(base, "JPEG")), ("b.jpg", corpus.encode(marked, "JPEG"))]
    loose = ingest(from_uploads(files), FolderStore(tmp_path / "1"))
    ((_a, _b, distance),) = loose.near_duplicates
    assert distance >= 1
    stricter = IngestSettings(phash_distance=distance - 1)
    strict = ingest(from_uploads(files), FolderStore(tmp_path / "2"), stricter)
    assert strict.near_duplicates == []


def test_entries_stream_through_one_at_a_time(tmp_path):
    """An upload is never unpacked whole into memory: each image is normalised and
    stored before the next entry is read (one worker), so memory holds one entry."""
    files = [(f"img{i}.png", corpus.encode(corpus.photo(seed=60 + i), "PNG")) for i in range(6)]
    files.append(("img0.txt", b"ohwx, woman"))  # a caption after its image still matches
    produced: list[str] = []
    stored_when: list[int] = []

    def items():
        for item in from_uploads(files):
            produced.append(item.name)
            yield item

    folder = FolderStore(tmp_path / "d")

    def store(key: str, data: bytes, ext: str) -> str:
        if ext != "txt":
            stored_when.append(len(produced))
        return folder(key, data, ext)

    result = ingest(items(), store, IngestSettings(workers=1))
    assert len(result.accepted) == 6
    assert stored_when == [1, 2, 3, 4, 5, 6]
    assert result.accepted[0].caption == "ohwx, woman"


def test_caption_text_per_upload_is_capped(tmp_path):
    files = [("img.png", corpus.encode(corpus.photo(seed=70), "PNG"))]
    files += [(f"c{i}.txt", b"x" * 1000) for i in range(5)]
    settings = IngestSettings(caption_upload_max_bytes=3500)
    result = ingest(from_uploads(files), FolderStore(tmp_path / "d"), settings)
    assert [(r.source, r.code) for r in result.rejected] == [
        ("c3.txt", Reason.CAPTION_TOO_LARGE),
        ("c4.txt", Reason.CAPTION_TOO_LARGE),
    ]


def test_images_needing_too_much_memory_to_decode_are_refused_unread(tmp_path):
    """A 200 KB PNG under the pixel limit still needs hundreds of MiB once decoded."""
    big = corpus.encode(Image.new("RGB", (9000, 6660), (128, 128, 128)), "PNG")
    assert len(big) < 2**20
    result = ingest(from_uploads([("big.png", big)]), FolderStore(tmp_path / "d"))
    [rejection] = result.rejected
    assert rejection.code is Reason.DECOMPRESSION_BOMB
    assert rejection.message.startswith(
        "big.png: 9000×6660 pixels would need about 343 MiB to decode, over the lab's "
        "192 MiB (about 34 MP for such an image)"
    )

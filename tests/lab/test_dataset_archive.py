"""Zip uploads: entries read in memory under caps, hostile entries refused by code."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from lab.dataset.archive import ZipEntry, display_name, read_zip
from lab.dataset.reasons import DatasetError, Notice, Reason, Rejection
from lab.dataset.settings import IngestSettings
from lab.dataset.sources import SourceFile, from_uploads
from tests.lab import corpus

MiB = 1024 * 1024


def entries(data: bytes, settings: IngestSettings | None = None):
    return list(read_zip(io.BytesIO(data), "up.zip", settings))


def by_name(items):
    return {item.source if not isinstance(item, ZipEntry) else item.name: item for item in items}


def test_good_entries_come_back_in_memory():
    png = corpus.encode(corpus.photo(), "PNG")
    items = entries(corpus.zip_of({"a/one.png": png, "a/one.txt": b"tag"}))
    assert [i.name for i in items] == ["up.zip/a/one.png", "up.zip/a/one.txt"]
    assert items[0].data == png


@pytest.mark.parametrize(
    "evil", ["../../etc/cron.d/x.png", "/abs/path.png", "C:\\Windows\\x.png", "a/../../b.png"]
)
def test_zip_slip_names_are_refused(evil):
    png = corpus.encode(corpus.photo(), "PNG")
    items = entries(corpus.zip_of({evil: png, "ok.png": png}))
    codes = [i.code for i in items if isinstance(i, Rejection)]
    assert codes == [Reason.ZIP_SLIP]
    assert any(isinstance(i, ZipEntry) and i.name == "up.zip/ok.png" for i in items)


def test_nested_archives_are_not_opened():
    inner = corpus.zip_of({"x.png": b"data"})
    items = entries(corpus.zip_of({"inner.zip": inner, "notes.tar.gz": b"\x1f\x8b" + bytes(30)}))
    assert [i.code for i in items] == [Reason.NESTED_ARCHIVE, Reason.NESTED_ARCHIVE]


def test_too_many_entries_refuses_the_archive_before_reading():
    data = corpus.zip_of({f"{i}.txt": b"x" for i in range(11)})
    with pytest.raises(DatasetError) as caught:
        entries(data, IngestSettings(zip_max_entries=10))
    assert caught.value.reason is Reason.TOO_MANY_ENTRIES
    assert len(entries(data, IngestSettings(zip_max_entries=11))) == 11


def test_zip_bomb_entry_is_caught_while_inflating():
    bomb = bytes(8 * MiB)  # zeros: ~8 KiB deflated, a ratio around 1000:1
    items = entries(
        corpus.zip_of({"bomb.png": bomb, "ok.txt": b"fine"}, level=9),
        IngestSettings(zip_max_entry_bytes=4 * MiB),
    )
    named = by_name(items)
    assert named["up.zip/bomb.png"].code is Reason.ZIP_BOMB
    assert isinstance(named["up.zip/ok.txt"], ZipEntry)


def test_lying_size_header_cannot_smuggle_bytes():
    # The declared size says 10 bytes; the real stream inflates to 3 MiB.
    data = bytearray(corpus.zip_of({"liar.png": bytes(3 * MiB)}, level=9))
    central = data.rfind(b"PK\x01\x02")
    for offset in (22, central + 24):  # uncompressed size: local and central headers
        data[offset : offset + 4] = (10).to_bytes(4, "little")
    items = entries(bytes(data), IngestSettings(zip_max_entry_bytes=1 * MiB))
    assert len(items) == 1
    assert isinstance(items[0], Rejection)
    assert items[0].code in (Reason.ZIP_BOMB, Reason.CORRUPT)


def test_total_budget_stops_reading_the_archive():
    payload = {f"{i}.png": bytes(600 * 1024) for i in range(5)}
    items = entries(
        corpus.zip_of(payload),
        IngestSettings(zip_max_total_bytes=MiB, zip_max_ratio=10_000),
    )
    assert isinstance(items[0], ZipEntry)
    assert items[-1].code is Reason.ZIP_BOMB and items[-1].source == "up.zip"
    assert len(items) == 2  # nothing after the budget ran out


def test_encrypted_entry():
    items = entries(corpus.encrypted_zip(b"whatever"))
    assert [i.code for i in items] == [Reason.ENCRYPTED]


def test_corrupt_archive():
    with pytest.raises(DatasetError) as caught:
        entries(b"PK\x03\x04 this is not really a zip")
    assert caught.value.reason is Reason.CORRUPT_ARCHIVE


def test_bad_crc_entry_is_corrupt_and_others_survive():
    data = bytearray(corpus.zip_of({"a.txt": b"A" * 1000, "b.txt": b"fine"}, level=0))
    at = data.find(b"A" * 1000)
    data[at] = ord("B")
    items = by_name(entries(bytes(data)))
    assert items["up.zip/a.txt"].code is Reason.CORRUPT
    assert isinstance(items["up.zip/b.txt"], ZipEntry)


def test_system_files_are_skipped_with_a_notice():
    items = entries(corpus.zip_of({"__MACOSX/._a.png": b"junk", ".DS_Store": b"x"}))
    assert all(isinstance(i, Notice) for i in items) and len(items) == 2


def test_non_utf8_entry_names_are_printable_and_json_safe():
    png = corpus.encode(corpus.photo(), "PNG")
    items = entries(corpus.zip_with_raw_name(b"caf\xe9\x01.png", png))
    (entry,) = items
    assert isinstance(entry, ZipEntry) and entry.data == png
    assert entry.name.endswith(".png") and "\x01" not in entry.name
    json.dumps(entry.name)


def test_display_name_handles_undecodable_file_system_names():
    raw = b"bad\xff\xfename\n.png".decode("utf-8", "surrogateescape")
    shown = display_name(raw)
    assert "\ufffd" in shown and "\n" not in shown
    json.dumps(shown)


def test_uploads_open_top_level_zips_once():
    png = corpus.encode(corpus.photo(), "PNG")
    inner = corpus.zip_of({"deep.png": png})
    upload = corpus.zip_of({"one.png": png, "inner.zip": inner})
    items = list(from_uploads([("../../pack.zip", upload), ("two.png", png)]))
    files = [i.name for i in items if isinstance(i, SourceFile)]
    assert files == ["pack.zip/one.png", "two.png"]
    assert [i.code for i in items if isinstance(i, Rejection)] == [Reason.NESTED_ARCHIVE]


def test_zipfile_entry_count_from_end_record_is_used():
    # An archive declaring more entries than the cap is refused from the end record.
    data = bytearray(corpus.zip_of({"a.txt": b"x"}))
    eocd = data.rfind(b"PK\x05\x06")
    data[eocd + 10 : eocd + 12] = (60000).to_bytes(2, "little")
    with pytest.raises(DatasetError) as caught:
        entries(bytes(data), IngestSettings(zip_max_entries=100))
    assert caught.value.reason is Reason.TOO_MANY_ENTRIES
    assert zipfile.is_zipfile(io.BytesIO(corpus.zip_of({"a.txt": b"x"})))

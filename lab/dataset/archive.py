"""Zip uploads, read entry by entry in memory under caps; nothing is ever extracted.

Entry names are only labels (for messages and caption matching): they never become
paths, so a ``../../etc/passwd`` entry cannot escape anywhere. Hostile names are still
refused (``zip_slip``) so the uploader learns the archive is odd. Sizes are counted
while inflating, because the sizes in the zip headers are whatever the sender wrote.
"""

from __future__ import annotations

import logging
import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from lab.dataset.reasons import DatasetError, Notice, Reason, Rejection, Warn
from lab.dataset.settings import IngestSettings

__all__ = ["ZipEntry", "display_name", "is_system_file", "read_zip"]

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_ARCHIVE_SUFFIXES = frozenset(
    {".zip", ".rar", ".7z", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".cbz", ".cbr"}
)
_SYSTEM_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_EOCD = b"PK\x05\x06"
_ZIP64_EOCD = b"PK\x06\x06"


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """One file read from an archive: its display name and its bytes."""

    name: str
    data: bytes


def display_name(name: str) -> str:
    """A printable, JSON-safe version of an untrusted file name.

    Undecodable bytes (``surrogateescape`` names from the file system) become U+FFFD and
    control characters become ``?``.
    """
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join("?" if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)


def is_system_file(name: str) -> bool:
    """Files that operating systems add to folders and zips (``__MACOSX/``, ``._x``…)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if any(part == "__MACOSX" for part in parts):
        return True
    base = parts[-1] if parts else ""
    return base.startswith("._") or base.casefold() in _SYSTEM_NAMES


def is_archive_name(name: str) -> bool:
    """Whether the name ends like an archive (checked before reading the entry)."""
    return PurePosixPath(name.replace("\\", "/")).suffix.casefold() in _ARCHIVE_SUFFIXES


def _unsafe_name(name: str) -> bool:
    normalised = name.replace("\\", "/")
    if "\x00" in name or normalised.startswith("/") or _DRIVE.match(normalised):
        return True
    return ".." in PurePosixPath(normalised).parts


def declared_entry_count(fp: BinaryIO) -> int | None:
    """The entry count in the end-of-central-directory record (ZIP64 aware), or ``None``.

    Read before :class:`zipfile.ZipFile` builds one object per entry, so an archive
    announcing millions of entries is refused cheaply.
    """
    fp.seek(0, 2)
    size = fp.tell()
    tail_size = min(size, 65536 + 22)
    fp.seek(size - tail_size)
    tail = fp.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        return None
    count = struct.unpack("<H", tail[at + 10 : at + 12])[0]
    if count != 0xFFFF:
        return count
    at64 = tail.rfind(_ZIP64_EOCD, 0, at)
    if at64 < 0 or at64 + 40 > len(tail):
        return None
    return struct.unpack("<Q", tail[at64 + 32 : at64 + 40])[0]


def read_zip(
    archive: Path | BinaryIO, archive_name: str, settings: IngestSettings | None = None
) -> Iterator[ZipEntry | Rejection | Notice]:
    """Yield each file of a zip (or a per-entry rejection/notice), never touching disk.

    Raises :class:`DatasetError` (``corrupt_archive``, ``too_many_entries``) when the
    archive as a whole is refused, before anything is yielded.
    """
    settings = settings or IngestSettings()
    try:
        fp: BinaryIO = archive.open("rb") if isinstance(archive, Path) else archive
    except OSError as error:
        raise DatasetError(
            Reason.CORRUPT_ARCHIVE, f"{archive_name}: cannot be read ({error.strerror})."
        ) from error
    try:
        yield from _read_zip(fp, archive_name, settings)
    finally:
        if isinstance(archive, Path):
            fp.close()


def _read_zip(
    fp: BinaryIO, archive_name: str, settings: IngestSettings
) -> Iterator[ZipEntry | Rejection | Notice]:
    declared = declared_entry_count(fp)
    if declared is not None and declared > settings.zip_max_entries:
        raise _too_many(archive_name, declared, settings)
    fp.seek(0)
    try:
        zf = zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DatasetError(
            Reason.CORRUPT_ARCHIVE, f"{archive_name}: is not a readable zip archive."
        ) from error
    with zf:
        infos = zf.infolist()
        if len(infos) > settings.zip_max_entries:
            raise _too_many(archive_name, len(infos), settings)
        total = 0
        for info in infos:
            if info.is_dir():
                continue
            name = f"{archive_name}/{display_name(info.filename)}"
            if _unsafe_name(info.filename):
                yield Rejection(
                    name,
                    Reason.ZIP_SLIP,
                    f"{name}: entry path points outside the archive; refused.",
                )
                continue
            if is_system_file(info.filename):
                yield Notice(name, Warn.SKIPPED_SYSTEM_FILE, f"{name}: system file skipped.")
                continue
            if is_archive_name(info.filename):
                yield Rejection(
                    name,
                    Reason.NESTED_ARCHIVE,
                    f"{name}: archives inside archives are not opened; upload it separately.",
                )
                continue
            if info.flag_bits & 0x1:
                yield Rejection(
                    name, Reason.ENCRYPTED, f"{name}: is password-protected; upload it unlocked."
                )
                continue
            budget = settings.zip_max_total_bytes - total
            outcome = _read_entry(zf, info, name, archive_name, settings, budget)
            if isinstance(outcome, ZipEntry):
                total += len(outcome.data)
                yield outcome
                continue
            yield outcome
            if outcome.code is Reason.ZIP_BOMB and outcome.source == archive_name:
                return  # the archive's total budget is spent: stop reading


def _too_many(archive_name: str, count: int, settings: IngestSettings) -> DatasetError:
    return DatasetError(
        Reason.TOO_MANY_ENTRIES,
        f"{archive_name}: has {count:,} entries, over the limit of "
        f"{settings.zip_max_entries:,}; split it into smaller archives.",
    )


def _read_entry(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    name: str,
    archive_name: str,
    settings: IngestSettings,
    budget: int,
) -> ZipEntry | Rejection:
    """Inflate one entry, counting real bytes against the per-entry and total caps."""
    cap = min(settings.zip_max_entry_bytes, settings.max_file_bytes)
    if info.file_size > cap:
        if info.file_size > settings.zip_max_ratio * max(1, info.compress_size):
            return _entry_bomb(name, info, info.file_size, cap, settings)
        return Rejection(
            name,
            Reason.FILE_TOO_LARGE,
            f"{name}: {info.file_size / 2**20:.1f} MiB is over the "
            f"{cap / 2**20:.0f} MiB limit for one file.",
        )
    chunks: list[bytes] = []
    read = 0
    try:
        with zf.open(info) as stream:
            while True:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                read += len(chunk)
                chunks.append(chunk)
                if read > budget:
                    return Rejection(
                        archive_name,
                        Reason.ZIP_BOMB,
                        f"{archive_name}: expands past "
                        f"{settings.zip_max_total_bytes / 2**20:.0f} MiB in total; "
                        "the rest of the archive was not read.",
                    )
                if read > cap or (
                    read > _CHUNK and read > settings.zip_max_ratio * max(1, info.compress_size)
                ):
                    return _entry_bomb(name, info, read, cap, settings)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        logger.debug("%s: bad zip entry: %s", name, error)
        return Rejection(
            name, Reason.CORRUPT, f"{name}: this entry of the archive is damaged (bad CRC/data)."
        )
    except NotImplementedError:
        return Rejection(
            name,
            Reason.UNSUPPORTED_FORMAT,
            f"{name}: uses a zip compression method that cannot be read; re-zip it.",
        )
    return ZipEntry(name, b"".join(chunks))


def _entry_bomb(
    name: str, info: zipfile.ZipInfo, read: int, cap: int, settings: IngestSettings
) -> Rejection:
    ratio = read / max(1, info.compress_size)
    if ratio > settings.zip_max_ratio or read > info.file_size:
        return Rejection(
            name,
            Reason.ZIP_BOMB,
            f"{name}: inflates far beyond its size ({ratio:,.0f}:1, "
            f"header said {info.file_size:,} bytes); refused.",
        )
    return Rejection(
        name,
        Reason.FILE_TOO_LARGE,
        f"{name}: is over the {cap / 2**20:.0f} MiB limit for one file.",
    )

"""Where uploads come from: a folder, a zip, or (name, bytes) pairs from Discord.

Each source yields :class:`SourceFile` items to ingest, plus rejections and notices
for what it refused or skipped on the way (symlinks, oversized files, system files,
hostile zip entries). A zip given at the top level is opened; one inside is not.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.dataset.archive import (
    ZipEntry,
    display_name,
    is_archive_name,
    is_system_file,
    read_zip,
)
from lab.dataset.reasons import DatasetError, Notice, Reason, Rejection, Warn
from lab.dataset.settings import IngestSettings

__all__ = ["Item", "SourceFile", "from_folder", "from_path", "from_uploads", "from_zip"]

logger = logging.getLogger(__name__)

CAPTION_SUFFIX = ".txt"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to ingest: a display name and either its bytes or a path to read."""

    name: str
    data: bytes | None = None
    path: Path | None = None

    def read(self, limit: int) -> bytes:
        """The bytes, reading at most ``limit + 1`` from disk (the file may have grown)."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError("a SourceFile needs data or a path")
        # O_NOFOLLOW: a file swapped for a symlink after the folder walk is not followed.
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            return handle.read(limit + 1)

    @property
    def is_caption(self) -> bool:
        return self.name.casefold().endswith(CAPTION_SUFFIX)

    @property
    def stem_key(self) -> str:
        """The name without its extension, case-folded: how captions meet images."""
        base, dot, _ext = self.name.rpartition(".")
        return (base if dot and "/" not in _ext else self.name).casefold()


Item = SourceFile | Rejection | Notice


def from_path(src: Path, settings: IngestSettings | None = None) -> Iterator[Item]:
    """A folder (walked recursively) or a single ``.zip`` file.

    Raises :class:`FileNotFoundError`/:class:`NotADirectoryError` for a missing source
    and :class:`DatasetError` for a zip refused as a whole.
    """
    settings = settings or IngestSettings()
    if src.is_dir():
        return from_folder(src, settings)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    with src.open("rb") as handle:
        magic = handle.read(4)
    if magic[:2] == b"PK" or src.suffix.casefold() == ".zip":
        return from_zip(src, display_name(src.name), settings)
    raise NotADirectoryError(f"{src}: expected a folder or a .zip archive")


def from_folder(root: Path, settings: IngestSettings | None = None) -> Iterator[Item]:
    """Every file under ``root`` in a stable order; symlinks are never followed."""
    settings = settings or IngestSettings()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for filename in sorted(filenames):
            path = base / filename
            name = display_name(path.relative_to(root).as_posix())
            count += 1
            if count > settings.folder_max_files:
                yield Rejection(
                    display_name(root.name),
                    Reason.TOO_MANY_ENTRIES,
                    f"{display_name(root.name)}: more than {settings.folder_max_files:,} "
                    "files; the rest were not read.",
                )
                return
            yield from _folder_file(path, name, settings)


def _folder_file(path: Path, name: str, settings: IngestSettings) -> Iterator[Item]:
    if path.is_symlink():
        yield Rejection(name, Reason.SYMLINK, f"{name}: is a symbolic link; not followed.")
        return
    if is_system_file(name):
        yield Notice(name, Warn.SKIPPED_SYSTEM_FILE, f"{name}: system file skipped.")
        return
    if is_archive_name(name):
        yield Rejection(
            name,
            Reason.NESTED_ARCHIVE,
            f"{name}: archives inside an upload are not opened; import it on its own.",
        )
        return
    try:
        size = path.stat().st_size
    except OSError as error:
        yield Rejection(name, Reason.CORRUPT, f"{name}: cannot be read ({error.strerror}).")
        return
    if not path.is_file():
        return  # sockets, FIFOs, devices: nothing to ingest
    limit = settings.caption_max_bytes if name.casefold().endswith(CAPTION_SUFFIX) else None
    if limit is None and size > settings.max_file_bytes:
        yield Rejection(
            name,
            Reason.FILE_TOO_LARGE,
            f"{name}: {size / 2**20:.1f} MiB is over the "
            f"{settings.max_file_bytes / 2**20:.0f} MiB limit for one file.",
        )
        return
    yield SourceFile(name, path=path)


def from_zip(
    archive: Path | bytes, name: str, settings: IngestSettings | None = None
) -> Iterator[Item]:
    """The entries of a zip (in memory); a refused archive becomes one rejection."""
    settings = settings or IngestSettings()
    source = io.BytesIO(archive) if isinstance(archive, bytes) else archive
    try:
        for entry in read_zip(source, name, settings):
            if isinstance(entry, ZipEntry):
                yield SourceFile(entry.name, data=entry.data)
            else:
                yield entry
    except DatasetError as error:
        yield error.rejection(name)


def from_uploads(
    uploads: Iterable[tuple[str, bytes | Path]], settings: IngestSettings | None = None
) -> Iterator[Item]:
    """Files received from members (``(original name, bytes or a file holding them)``);
    zips are opened once. A file is read only when its turn comes, one entry at a time."""
    settings = settings or IngestSettings()
    for raw_name, data in uploads:
        name = display_name(os.path.basename(raw_name.replace("\\", "/")) or "upload")
        head = data[:22] if isinstance(data, bytes) else _head(data)
        if head[:4] == b"PK\x03\x04" or (head[:4] == b"PK\x05\x06" and _size(data) == 22):
            yield from from_zip(data, name, settings)
        elif is_system_file(name):
            yield Notice(name, Warn.SKIPPED_SYSTEM_FILE, f"{name}: system file skipped.")
        elif isinstance(data, bytes):
            yield SourceFile(name, data=data)
        else:
            yield SourceFile(name, path=data)


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(22)


def _size(data: bytes | Path) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size

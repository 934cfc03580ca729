"""Ingest a batch: images normalised in parallel, captions matched by stem, duplicates
refused, near-duplicates reported, accepted files stored by content hash.

Nothing of a refused file is stored: an image reaches the store only once it is fully
decoded, normalised and known not to be a duplicate.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from lab.captions import check_trigger, decode_caption, enforce_trigger, join_tags, split_tags
from lab.captions import normalise_caption as _normalise_caption
from lab.dataset.image import NormalisedImage, normalise_image
from lab.dataset.reasons import DatasetError, Notice, Reason, Rejection, Warn
from lab.dataset.settings import IngestSettings
from lab.dataset.similar import near_duplicate_pairs
from lab.dataset.sources import Item, SourceFile
from lab.families import BaseFamily

__all__ = [
    "AcceptedFile",
    "CaptionPolicy",
    "FolderStore",
    "IngestResult",
    "StorageStore",
    "Store",
    "ingest",
]

logger = logging.getLogger(__name__)

# Below this many images, starting worker processes costs more than it saves.
_PARALLEL_MIN = 4


class Store(Protocol):
    """Where accepted files go: ``store(key, data, ext) -> stored name``.

    ``key`` is the image's SHA-256; its caption is stored under the same key with
    ``ext="txt"``. The worker plugs its storage interface in here.
    """

    def __call__(self, key: str, data: bytes, ext: str) -> str: ...


class FolderStore:
    """A local folder of ``<sha256>.<ext>`` files, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, key: str, data: bytes, ext: str) -> str:
        """Write ``<key>.<ext>`` (temp file + rename, so a crash leaves no half file)."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{key}.{ext}"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=f".{ext}")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, self.root / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name

    def known(self) -> dict[str, str]:
        """SHA-256 → stored name of the images already in the folder."""
        if not self.root.is_dir():
            return {}
        return {
            path.stem: path.name
            for path in self.root.iterdir()
            if path.suffix in (".jpg", ".png") and len(path.stem) == 64
        }


class _PutBytes(Protocol):
    def put_bytes(self, key: str, data: bytes) -> object: ...


class StorageStore:
    """Adapter from :class:`lab.storage.Storage` (local or S3) to :class:`Store`.

    Objects land at ``<prefix>/<sha256>.<ext>``; the storage key is the stored name.
    """

    def __init__(self, storage: _PutBytes, prefix: str) -> None:
        self.storage = storage
        self.prefix = prefix.strip("/")

    def __call__(self, key: str, data: bytes, ext: str) -> str:
        """Put the bytes under ``<prefix>/<key>.<ext>`` and return that key."""
        name = f"{self.prefix}/{key}.{ext}" if self.prefix else f"{key}.{ext}"
        self.storage.put_bytes(name, data)
        return name


@dataclass(frozen=True, slots=True)
class CaptionPolicy:
    """The trigger word (first tag) and class token (second) to check, or enforce."""

    trigger: str | None = None
    class_token: str | None = None
    enforce: bool = False


@dataclass(frozen=True, slots=True)
class AcceptedFile:
    """An image that made it in, with its caption (if any) and the facts about it."""

    source: str
    stored: str
    sha256: str
    width: int
    height: int
    phash: str
    source_format: str
    caption: str | None = None
    caption_stored: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``loralab dataset import --json``."""
        return {
            "source": self.source,
            "stored": self.stored,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "caption": self.caption_stored,
        }


@dataclass(slots=True)
class IngestResult:
    """What happened to every file of a batch."""

    accepted: list[AcceptedFile] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    elapsed_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Counts per outcome and per reason code."""
        by_code: dict[str, int] = {}
        for rejection in self.rejected:
            by_code[str(rejection.code)] = by_code.get(str(rejection.code), 0) + 1
        return {
            "accepted": len(self.accepted),
            "rejected": len(self.rejected),
            "rejected_by_code": dict(sorted(by_code.items())),
            "captioned": sum(1 for a in self.accepted if a.caption_stored),
            "uncaptioned": sum(1 for a in self.accepted if not a.caption_stored),
            "near_duplicate_pairs": len(self.near_duplicates),
            "warnings": len(self.warnings),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object of ``loralab dataset import``."""
        return {
            "accepted": [a.as_dict() for a in self.accepted],
            "rejected": [r.as_dict() for r in self.rejected],
            "near_duplicates": [list(pair) for pair in self.near_duplicates],
            "warnings": [w.as_dict() for w in self.warnings],
            "summary": self.summary(),
        }


def ingest(
    items: Iterable[Item],
    store: Store,
    settings: IngestSettings | None = None,
    *,
    family: BaseFamily | None = None,
    captions: CaptionPolicy | None = None,
    known: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Ingest ``items`` (from :mod:`lab.dataset.sources`) into ``store``.

    ``known`` maps SHA-256 → name of images already in the dataset (refused as
    duplicates). ``progress(n)`` is called as images finish.
    """
    settings = settings or IngestSettings()
    policy = captions or CaptionPolicy()
    started = time.perf_counter()
    result = IngestResult()
    batch = _Batch(settings, result)
    seen: dict[str, str] = dict(known or {})
    # Images are normalised and stored as they stream in; only their facts are kept, so
    # memory holds one entry (per worker) at a time, never the whole upload. Captions
    # may come before or after their image, so they are matched once all are read.
    stored_images: list[tuple[SourceFile, NormalisedImage, str]] = []
    for source, outcome in _normalise_all(batch.images(items), settings, family, progress):
        if isinstance(outcome, Rejection):
            result.rejected.append(outcome)
            continue
        duplicate_of = seen.get(outcome.sha256) or seen.get(outcome.source_sha256)
        if duplicate_of is not None:
            result.rejected.append(
                Rejection(
                    source.name,
                    Reason.DUPLICATE,
                    f"{source.name}: the same image as {duplicate_of}; kept only once.",
                )
            )
            continue
        seen[outcome.sha256] = seen[outcome.source_sha256] = source.name
        result.warnings.extend(outcome.notices)
        stored = store(outcome.sha256, outcome.data, outcome.ext)
        stored_images.append((source, replace(outcome, data=b""), stored))
    for source, outcome, stored in stored_images:
        caption = _caption_for(source, batch.texts.get(source.stem_key), policy, result)
        caption_stored = None
        if caption is not None:
            caption_stored = store(outcome.sha256, caption.encode("utf-8"), "txt")
        result.accepted.append(
            AcceptedFile(
                source=source.name,
                stored=stored,
                sha256=outcome.sha256,
                width=outcome.width,
                height=outcome.height,
                phash=outcome.phash,
                source_format=outcome.source_format,
                caption=caption,
                caption_stored=caption_stored,
            )
        )
    _warn_orphan_captions(batch.caption_names, batch.image_keys, result)
    hashes = [a.phash for a in result.accepted]
    result.near_duplicates = [
        (result.accepted[i].source, result.accepted[j].source, distance)
        for i, j, distance in near_duplicate_pairs(hashes, settings.phash_distance)
    ]
    result.elapsed_s = time.perf_counter() - started
    logger.info("ingest: %s", result.summary())
    return result


class _Batch:
    """Sorts the stream: rejections and notices to the result, caption texts read (under
    a per-file and a per-upload cap), images passed on one by one."""

    def __init__(self, settings: IngestSettings, result: IngestResult) -> None:
        self.settings = settings
        self.result = result
        self.texts: dict[str, str] = {}
        self.caption_names: list[tuple[str, str]] = []
        self.image_keys: set[str] = set()
        self.caption_bytes = 0

    def images(self, items: Iterable[Item]) -> Iterator[SourceFile]:
        for item in items:
            if isinstance(item, Rejection):
                self.result.rejected.append(item)
            elif isinstance(item, Notice):
                self.result.warnings.append(item)
            elif item.is_caption:
                self.caption_names.append((item.name, item.stem_key))
                self._read_caption(item)
            else:
                self.image_keys.add(item.stem_key)
                yield item

    def _read_caption(self, file: SourceFile) -> None:
        settings = self.settings
        try:
            data = file.read(settings.caption_max_bytes)
            self.caption_bytes += len(data)
            if self.caption_bytes > settings.caption_upload_max_bytes:
                raise DatasetError(
                    Reason.CAPTION_TOO_LARGE,
                    f"{file.name}: the captions of this upload pass "
                    f"{settings.caption_upload_max_bytes / 2**20:.0f} MiB in total; "
                    "this one and the rest were not read.",
                )
            self.texts[file.stem_key] = decode_caption(data, file.name, settings.caption_max_bytes)
        except DatasetError as error:
            self.result.rejected.append(error.rejection(file.name))
        except OSError as error:
            self.result.rejected.append(
                Rejection(file.name, Reason.CORRUPT, f"{file.name}: cannot be read ({error}).")
            )


def _warn_orphan_captions(
    caption_names: list[tuple[str, str]], image_keys: set[str], result: IngestResult
) -> None:
    for name, stem_key in caption_names:
        if stem_key not in image_keys:
            result.warnings.append(
                Notice(
                    name,
                    Warn.CAPTION_WITHOUT_IMAGE,
                    f"{name}: no image with this name; caption not used.",
                )
            )


def _caption_for(
    source: SourceFile, text: str | None, policy: CaptionPolicy, result: IngestResult
) -> str | None:
    """The normalised caption to store with ``source`` (``None``: it has none)."""
    name = source.name
    if text is None:
        if policy.enforce and policy.trigger:
            tags = enforce_trigger([], policy.trigger, policy.class_token)
            result.warnings.append(
                Notice(
                    name, Warn.CAPTION_ENFORCED, f"{name}: no caption; wrote '{join_tags(tags)}'."
                )
            )
            return join_tags(tags)
        result.warnings.append(Notice(name, Warn.CAPTION_MISSING, f"{name}: has no caption."))
        return None
    caption = _normalise_caption(text)
    if caption != text.strip():
        result.warnings.append(
            Notice(name, Warn.CAPTION_NORMALISED, f"{name}: caption tidied (spaces, commas).")
        )
    if not policy.trigger:
        return caption
    tags = split_tags(caption)
    check = check_trigger(tags, policy.trigger, policy.class_token)
    if not check.problems:
        return caption
    if policy.enforce:
        caption = join_tags(enforce_trigger(tags, policy.trigger, policy.class_token))
        result.warnings.append(
            Notice(
                name,
                Warn.CAPTION_ENFORCED,
                f"{name}: caption now starts with '{policy.trigger}'"
                + (f", '{policy.class_token}'." if policy.class_token else "."),
            )
        )
        return caption
    for problem in check.problems:
        result.warnings.append(Notice(name, problem, _PROBLEM_TEXT[problem].format(name=name)))
    return caption


_PROBLEM_TEXT = {
    Warn.TRIGGER_MISSING: "{name}: caption lacks the trigger word.",
    Warn.TRIGGER_NOT_FIRST: "{name}: the trigger word is not the first tag.",
    Warn.CLASS_NOT_SECOND: "{name}: the class token is not the second tag.",
}


def _normalise_one(
    job: tuple[SourceFile, IngestSettings, BaseFamily | None],
) -> NormalisedImage | Rejection:
    """Worker body: never raises for a bad file."""
    source, settings, family = job
    try:
        data = source.read(settings.max_file_bytes)
        return normalise_image(data, source.name, settings, family)
    except DatasetError as error:
        return error.rejection(source.name)
    except OSError as error:
        return Rejection(source.name, Reason.CORRUPT, f"{source.name}: cannot be read ({error}).")


def _normalise_all(
    images: Iterator[SourceFile],
    settings: IngestSettings,
    family: BaseFamily | None,
    progress: Callable[[int], None] | None,
) -> Iterator[tuple[SourceFile, NormalisedImage | Rejection]]:
    """Results in input order, computed by a pool of threads over the cores.

    Threads, not processes: Pillow and hashlib release the GIL while decoding,
    resizing, encoding and hashing, so threads scale like processes here without
    pickling megabytes per image or paying a process start per batch. At most
    ``2 × workers`` images are read ahead and wait in memory, so a big upload (or a
    slow store) bounds the memory use.
    """
    workers = settings.workers or os.cpu_count() or 1
    first = list(itertools.islice(images, _PARALLEL_MIN)) if workers > 1 else []
    if workers <= 1 or len(first) < _PARALLEL_MIN:
        for image in itertools.chain(first, images):
            outcome = _normalise_one((image, settings, family))
            if progress:
                progress(1)
            yield image, outcome
        return
    queued = itertools.chain(first, images)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        pending: deque[tuple[SourceFile, Future[NormalisedImage | Rejection]]] = deque()
        for image in itertools.islice(queued, 2 * workers):
            pending.append((image, pool.submit(_normalise_one, (image, settings, family))))
        while pending:
            image, future = pending.popleft()
            outcome = future.result()
            for follower in itertools.islice(queued, 1):
                pending.append(
                    (follower, pool.submit(_normalise_one, (follower, settings, family)))
                )
            if progress:
                progress(1)
            yield image, outcome

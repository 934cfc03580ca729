"""The dataset health report: what a trainer would check by hand before training.

Reads a folder (the output of ``dataset import``, or any kohya-style folder), looks at
image headers (no full decode except for the perceptual hash), and reports counts, a
resolution histogram, each image's bucket at the training resolution (the trainer's
own :class:`~lab.buckets.BucketSpec`), duplicates, captions and warnings drawn from the
seed guides.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from lab.buckets import BucketSpec
from lab.captions import check_trigger, split_tags, tag_frequency
from lab.dataset.archive import display_name
from lab.dataset.image import ALLOWED_FORMATS, perceptual_hash
from lab.dataset.rules import CAPTION_SUFFIXES, is_skipped, oriented_size, trained_folders
from lab.dataset.settings import IngestSettings
from lab.dataset.similar import near_duplicate_pairs
from lab.dataset.sniff import sniff
from lab.families import FAMILIES, BaseFamily, FamilyDefaults

__all__ = ["HealthReport", "ImageFacts", "build_report", "parse_kohya_folder"]

logger = logging.getLogger(__name__)

_KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")
# Shortest-side bins of the resolution histogram: (label, lower bound).
_BINS = (
    ("<256", 0),
    ("256-383", 256),
    ("384-511", 384),
    ("512-767", 512),
    ("768-1023", 768),
    ("1024-1535", 1024),
    ("1536-2047", 1536),
    (">=2048", 2048),
)
DOMINANT_SHARE = 0.8
SMALL_SHARE = 0.25
TAG_LIMIT = 200


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """One image of the report."""

    path: str
    width: int
    height: int
    bucket: tuple[int, int]
    resized: tuple[int, int]
    sha256: str
    phash: str | None
    caption: str | None

    @property
    def upscaled(self) -> bool:
        """Whether the trainer will enlarge it to fill its bucket (detail is invented)."""
        return self.resized[0] > self.width or self.resized[1] > self.height


@dataclass(slots=True)
class HealthReport:
    """Everything ``loralab dataset check`` shows."""

    directory: str
    family: BaseFamily
    spec: BucketSpec
    trigger: str | None
    class_token: str | None
    images: list[ImageFacts] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    orphan_captions: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    not_trained: list[str] = field(default_factory=list)
    """Images the trainer would not read (outside the ``N_name`` folders, nested)."""

    def buckets(self) -> dict[str, int]:
        """``"WxH"`` → image count, largest first."""
        counts = Counter(f"{f.bucket[0]}x{f.bucket[1]}" for f in self.images)
        return dict(counts.most_common())

    def histogram(self) -> dict[str, int]:
        """Shortest-side bins → image count."""
        counts = dict.fromkeys((label for label, _ in _BINS), 0)
        for facts in self.images:
            short = min(facts.width, facts.height)
            label = next(lbl for lbl, low in reversed(_BINS) if short >= low)
            counts[label] += 1
        return counts

    def warning_files(self, settings: IngestSettings | None = None) -> dict[str, list[str]]:
        """Per warning code, the files behind it (for the text output to name them)."""
        min_side = (settings or IngestSettings()).min_side_for(self.family)
        return {
            "many_small_images": [
                f"{f.path} ({f.width}×{f.height})"
                for f in self.images
                if min(f.width, f.height) < min_side
            ],
            "many_upscaled": [f.path for f in self.images if f.upscaled],
            "duplicates": [f"{a} = {b}" for a, b in self.duplicates],
            "near_duplicates": [f"{a} ~ {b} (distance {d})" for a, b, d in self.near_duplicates],
            "captions_missing": self.missing_captions(),
            "trigger_missing": self.without_trigger(),
            "unreadable_files": [f"{path}: {why}" for path, why in self.unreadable],
            "images_not_trained": self.not_trained,
        }

    def missing_captions(self) -> list[str]:
        return [f.path for f in self.images if f.caption is None]

    def without_trigger(self) -> list[str]:
        if not self.trigger:
            return []
        return [
            f.path
            for f in self.images
            if f.caption is not None
            and not check_trigger(split_tags(f.caption), self.trigger).has_trigger
        ]

    def tags(self) -> dict[str, int]:
        freq = tag_frequency(split_tags(f.caption) for f in self.images if f.caption is not None)
        return dict(list(freq.items())[:TAG_LIMIT])

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object of ``loralab dataset check``."""
        return {
            "directory": self.directory,
            "family": str(self.family),
            "resolution": list(self.spec.resolution),
            "bucket_options": {
                "min_bucket_reso": self.spec.min_bucket_reso,
                "max_bucket_reso": self.spec.max_bucket_reso,
                "bucket_reso_steps": self.spec.bucket_reso_steps,
                "bucket_no_upscale": self.spec.bucket_no_upscale,
            },
            "trigger": self.trigger,
            "class_token": self.class_token,
            "counts": {
                "images": len(self.images),
                "captioned": sum(1 for f in self.images if f.caption is not None),
                "uncaptioned": len(self.missing_captions()),
                "unreadable": len(self.unreadable),
                "upscaled_in_bucket": sum(1 for f in self.images if f.upscaled),
                "duplicates": len(self.duplicates),
                "near_duplicates": len(self.near_duplicates),
            },
            "resolution_histogram": self.histogram(),
            "buckets": self.buckets(),
            "images": [
                {
                    "path": f.path,
                    "width": f.width,
                    "height": f.height,
                    "bucket": list(f.bucket),
                    "resized": list(f.resized),
                    "captioned": f.caption is not None,
                    "sha256": f.sha256,
                }
                for f in self.images
            ],
            "unreadable": [{"path": p, "error": e} for p, e in self.unreadable],
            "duplicates": [list(pair) for pair in self.duplicates],
            "near_duplicates": [list(pair) for pair in self.near_duplicates],
            "captions": {
                "missing": self.missing_captions(),
                "without_trigger": self.without_trigger(),
                "orphans": self.orphan_captions,
            },
            "tag_frequency": self.tags(),
            "warnings": [{"code": code, "message": message} for code, message in self.warnings],
        }


def parse_kohya_folder(name: str) -> tuple[int, str, str | None] | None:
    """``"10_ohwx woman"`` → ``(10, "ohwx", "woman")``; ``None`` if not kohya-style."""
    match = _KOHYA_FOLDER.match(name)
    if not match:
        return None
    trigger, _, class_token = match.group(2).strip().partition(" ")
    return int(match.group(1)), trigger, class_token.strip() or None


def build_report(
    directory: Path,
    *,
    family: BaseFamily = BaseFamily.SD15,
    resolution: int | None = None,
    spec: BucketSpec | None = None,
    trigger: str | None = None,
    class_token: str | None = None,
    settings: IngestSettings | None = None,
    progress: Callable[[int], None] | None = None,
) -> HealthReport:
    """Inspect ``directory`` recursively and return its :class:`HealthReport`.

    ``resolution`` defaults to the family's; ``spec`` overrides all bucket options.
    Trigger and class default to a kohya folder name (``N_trigger class``) if any.
    Raises :class:`NotADirectoryError` when ``directory`` is not a folder.
    """
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory}: not a folder")
    settings = settings or IngestSettings()
    defaults = FAMILIES[family]
    if spec is None:
        res = resolution or defaults.resolution
        spec = BucketSpec.square(res, max_bucket_reso=max(1024, 2 * res))
    if trigger is None:
        trigger, class_token = _infer_trigger(directory, class_token)
    report = HealthReport(str(directory), family, spec, trigger, class_token)
    image_paths, caption_paths = _walk(directory)
    trained = set(trained_folders(directory))
    report.not_trained = [_rel(p, directory) for p in image_paths if p.parent not in trained]
    workers = max(1, min(settings.workers or os.cpu_count() or 1, len(image_paths)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="report") as pool:
        inspect = partial(_inspect, root=directory, spec=spec, settings=settings)
        for path, outcome in zip(image_paths, pool.map(inspect, image_paths), strict=True):
            if isinstance(outcome, str):
                report.unreadable.append((_rel(path, directory), outcome))
            else:
                caption_path = caption_paths.get(path.with_suffix(""))
                if caption_path is not None:
                    text = caption_path.read_bytes().decode("utf-8-sig", errors="replace")
                    outcome = replace(outcome, caption=text)
                report.images.append(outcome)
            if progress:
                progress(1)
    image_stems = {p.with_suffix("") for p in image_paths}
    report.orphan_captions = sorted(
        _rel(p, directory) for p in caption_paths.values() if p.with_suffix("") not in image_stems
    )
    _find_duplicates(report, settings.phash_distance)
    report.warnings = _warnings(report, defaults, settings)
    return report


def _rel(path: Path, root: Path) -> str:
    return display_name(path.relative_to(root).as_posix())


def _infer_trigger(directory: Path, class_token: str | None) -> tuple[str | None, str | None]:
    candidates = [directory, *sorted(p for p in directory.iterdir() if p.is_dir())]
    found = {parsed[1:] for p in candidates if (parsed := parse_kohya_folder(p.name))}
    if len(found) == 1:
        trigger, inferred_class = found.pop()
        return trigger, class_token or inferred_class
    return None, class_token


def _walk(directory: Path) -> tuple[list[Path], dict[Path, Path]]:
    images: list[Path] = []
    captions: dict[Path, Path] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_symlink() or not path.is_file() or is_skipped(rel):
            continue  # side files, temp files of an interrupted import, hidden folders
        if path.suffix.casefold() in CAPTION_SUFFIXES:
            captions[path.with_suffix("")] = path
        elif path.suffix.casefold() not in (".json", ".toml", ".md", ".npz", ".safetensors"):
            images.append(path)
    return images, captions


def _inspect(
    path: Path, root: Path, spec: BucketSpec, settings: IngestSettings
) -> ImageFacts | str:
    """One image's facts (caption not yet attached), or why it cannot be read."""
    try:
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
                width, height = oriented_size(image)  # as the trainer buckets it
                phash = None
                if width * height <= settings.max_pixels:
                    image.draft("L", (256, 256))  # JPEG: reduced-scale decode, as in ingest
                    phash = perceptual_hash(image)
        assignment = spec.assign(width, height)
    except UnidentifiedImageError:
        # Pillow's own text names a BytesIO object, not the file: say what the bytes are.
        kind = sniff(data).label
        what = "unknown data" if kind == "other" else kind
        return f"not a JPEG, PNG or WebP image ({what})"
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        return str(error) or type(error).__name__
    return ImageFacts(
        path=_rel(path, root),
        width=width,
        height=height,
        bucket=assignment.bucket,
        resized=assignment.resized,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=phash,
        caption=None,
    )


def _find_duplicates(report: HealthReport, max_distance: int) -> None:
    first: dict[str, str] = {}
    for facts in report.images:
        if facts.sha256 in first:
            report.duplicates.append((first[facts.sha256], facts.path))
        else:
            first[facts.sha256] = facts.path
    hashed = [f for f in report.images if f.phash is not None]
    exact = set(report.duplicates)
    for i, j, distance in near_duplicate_pairs([f.phash or "" for f in hashed], max_distance):
        pair = (hashed[i].path, hashed[j].path)
        if pair not in exact:
            report.near_duplicates.append((*pair, distance))


def _warnings(
    report: HealthReport, defaults: FamilyDefaults, settings: IngestSettings
) -> list[tuple[str, str]]:
    """Dataset-level advice from the seed guides, as (code, message)."""
    out: list[tuple[str, str]] = []
    n = len(report.images)
    family = report.family.value
    if n < defaults.min_images:
        out.append(
            (
                "too_few_images",
                f"{n} images; {family} training needs at least {defaults.min_images}.",
            )
        )
    elif n < defaults.comfortable_images:
        out.append(
            (
                "few_images",
                f"{n} images; results are usually better with {defaults.comfortable_images}+.",
            )
        )
    min_side = settings.min_side_for(report.family)
    small = [f for f in report.images if min(f.width, f.height) < min_side]
    if n and len(small) / n > SMALL_SHARE:
        out.append(
            (
                "many_small_images",
                f"{len(small)} of {n} images are under {min_side} px on their short side; "
                "upscale them or replace them.",
            )
        )
    upscaled = sum(1 for f in report.images if f.upscaled)
    if n and upscaled / n > SMALL_SHARE:
        out.append(
            (
                "many_upscaled",
                f"{upscaled} of {n} images are smaller than their training bucket and will "
                "be enlarged (soft detail).",
            )
        )
    if n >= 10:
        bucket, count = Counter(f.bucket for f in report.images).most_common(1)[0]
        if count / n >= DOMINANT_SHARE:
            out.append(
                (
                    "aspect_dominates",
                    f"{count} of {n} images share the {bucket[0]}x{bucket[1]} bucket; "
                    "vary framing (close-ups, full body, landscape) so it generalises.",
                )
            )
    if report.duplicates:
        out.append(("duplicates", f"{len(report.duplicates)} exact duplicate image(s)."))
    if report.near_duplicates:
        out.append(
            (
                "near_duplicates",
                f"{len(report.near_duplicates)} near-duplicate pair(s); keep the best of each.",
            )
        )
    if missing := report.missing_captions():
        out.append(("captions_missing", f"{len(missing)} image(s) have no caption."))
    if lacking := report.without_trigger():
        out.append(
            (
                "trigger_missing",
                f"{len(lacking)} caption(s) lack the trigger word '{report.trigger}'.",
            )
        )
    if report.unreadable:
        out.append(("unreadable_files", f"{len(report.unreadable)} file(s) could not be read."))
    if report.not_trained:
        out.append(
            (
                "images_not_trained",
                f"{len(report.not_trained)} image(s) are outside the folders the trainer "
                "reads (the N_name folders, or this folder itself) and are not trained.",
            )
        )
    return out

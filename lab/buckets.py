"""Aspect-ratio bucketing: kohya sd-scripts' algorithm, the one implementation we ship.

The dataset health report and the trainer both call :class:`BucketSpec.assign`, so the
bucket a member sees in ``loralab dataset check`` is the bucket the trainer uses.

Behaviour follows kohya's ``model_util.make_bucket_resolutions`` and
``train_util.BucketManager.select_bucket`` (sd-scripts, read at commit 48d368fa):

* Without ``bucket_no_upscale`` a fixed set of buckets is made from the training
  resolution; an image goes to the bucket whose aspect ratio is nearest its own (an
  image whose size *is* a bucket keeps it), is scaled so it covers the bucket, and the
  overhang is cropped evenly from both sides.
* With ``bucket_no_upscale`` every image gets its own bucket: an image no larger than
  the training area keeps its size rounded down to ``bucket_reso_steps``; a larger one is
  scaled down to the training area first. Kohya's rounding there can lose a whole step
  on both sides (a 3072×3000 photo lands in 960×960 although 1024×1024 fits, see
  sd-scripts #731), so by default we choose the largest bucket that fits the area with
  a small aspect error and fall back to kohya's choice otherwise.
  ``no_upscale_strategy="kohya"`` reproduces kohya exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

__all__ = [
    "BucketAssignment",
    "BucketSpec",
    "group_by_bucket",
    "make_bucket_resolutions",
]

Size = tuple[int, int]


def make_bucket_resolutions(
    max_reso: Size, min_size: int = 256, max_size: int = 1024, divisible: int = 64
) -> list[Size]:
    """The predefined bucket sizes for a training resolution, sorted ``(width, height)``.

    Every bucket has an area of at most ``max_reso[0] * max_reso[1]``, sides that are
    multiples of ``divisible`` within ``[min_size, max_size]``, plus the largest square.
    Same result as kohya's ``model_util.make_bucket_resolutions``.
    """
    max_area = max_reso[0] * max_reso[1]
    side = int(math.sqrt(max_area) // divisible) * divisible
    resos: set[Size] = {(side, side)}
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


@dataclass(frozen=True, slots=True)
class BucketAssignment:
    """Where one image goes: its bucket, the size it is resized to, the crop offset.

    ``resized`` covers ``bucket``; the bucket is cut from the resized image at
    ``crop = (left, top)`` (centre crop, kohya's ``trim_and_resize_if_required``).
    """

    bucket: Size
    resized: Size
    crop: Size

    @property
    def aspect_error(self) -> float:
        """Bucket aspect ratio minus the resized image's (kohya's ``ar_error``)."""
        return self.bucket[0] / self.bucket[1] - self.resized[0] / self.resized[1]

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` in the resized image, for ``Image.crop``."""
        left, top = self.crop
        return left, top, left + self.bucket[0], top + self.bucket[1]


def _round_to_steps(x: float, steps: int) -> int:
    """Kohya's ``round_to_steps``: round to an integer, then down to a multiple of steps."""
    value = int(x + 0.5)
    return value - value % steps


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """Kohya's bucket options (same names as sd-scripts) and the assignment rule.

    ``resolution`` is ``(width, height)`` of the training resolution; use
    :meth:`square` for the usual ``512``/``1024``.
    """

    resolution: Size
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    no_upscale_strategy: Literal["largest", "kohya"] = "largest"
    """With ``bucket_no_upscale``: ``kohya`` replicates sd-scripts exactly; ``largest``
    (default) fixes its lost step (3072×3000 → 1024², not 960²)."""
    no_upscale_max_aspect_error: float = 0.05
    """``largest`` only: the relative aspect mismatch (hence crop) a bigger bucket may cost."""

    def __post_init__(self) -> None:
        width, height = self.resolution
        if width <= 0 or height <= 0:
            raise ValueError(f"resolution must be positive, got {self.resolution}")
        if self.bucket_reso_steps <= 0:
            raise ValueError("bucket_reso_steps must be positive")
        if not 0 < self.min_bucket_reso <= self.max_bucket_reso:
            raise ValueError("need 0 < min_bucket_reso <= max_bucket_reso")
        if self.max_bucket_reso < max(width, height):
            raise ValueError(
                f"max_bucket_reso {self.max_bucket_reso} is smaller than the resolution "
                f"{width}x{height}"
            )
        if not 0 <= self.no_upscale_max_aspect_error < 1:
            raise ValueError("no_upscale_max_aspect_error must be within [0, 1)")
        if self.no_upscale_strategy not in ("largest", "kohya"):
            raise ValueError(f"unknown no_upscale_strategy {self.no_upscale_strategy!r}")

    @classmethod
    def square(cls, resolution: int, **options: object) -> BucketSpec:
        """A spec for a square training resolution (kohya's ``--resolution 1024``)."""
        return cls((resolution, resolution), **options)  # type: ignore[arg-type]

    @property
    def max_area(self) -> int:
        """The training area every bucket stays within."""
        return self.resolution[0] * self.resolution[1]

    def predefined_buckets(self) -> list[Size]:
        """The fixed bucket list (meaningful without ``bucket_no_upscale``)."""
        return _predefined(
            self.resolution, self.min_bucket_reso, self.max_bucket_reso, self.bucket_reso_steps
        )

    def assign(self, width: int, height: int) -> BucketAssignment:
        """The bucket, resize and crop for an image of ``width × height`` pixels."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if self.bucket_no_upscale:
            bucket, resized = self._no_upscale(width, height)
        else:
            bucket, resized = self._predefined_bucket(width, height)
        if bucket[0] <= 0 or bucket[1] <= 0:
            raise ValueError(
                f"a {width}x{height} image is smaller than one bucket step "
                f"({self.bucket_reso_steps} px)"
            )
        crop = ((resized[0] - bucket[0]) // 2, (resized[1] - bucket[1]) // 2)
        return BucketAssignment(bucket, resized, crop)

    # -- kohya's two modes ------------------------------------------------------------

    def _predefined_bucket(self, width: int, height: int) -> tuple[Size, Size]:
        resos = self.predefined_buckets()
        aspect = width / height
        if (width, height) in resos:
            bucket = (width, height)
        else:
            # First minimum, like numpy's argmin over the sorted list.
            bucket = min(resos, key=lambda r: abs(r[0] / r[1] - aspect))
        # Wider than the bucket: match heights (and crop the width); else match widths.
        scale = bucket[1] / height if aspect > bucket[0] / bucket[1] else bucket[0] / width
        resized = (int(width * scale + 0.5), int(height * scale + 0.5))
        return bucket, resized

    def _no_upscale(self, width: int, height: int) -> tuple[Size, Size]:
        steps = self.bucket_reso_steps
        if width * height <= self.max_area:
            resized = (width, height)
            return (width - width % steps, height - height % steps), resized
        kohya = self._kohya_downscaled(width, height)
        if self.no_upscale_strategy == "kohya":
            return kohya
        better = _largest_bucket(
            width, height, self.max_area, steps, self.no_upscale_max_aspect_error
        )
        if better is None or better[0][0] * better[0][1] <= kohya[0][0] * kohya[0][1]:
            return kohya
        return better

    def _kohya_downscaled(self, width: int, height: int) -> tuple[Size, Size]:
        """Kohya's per-image bucket for an image larger than the training area."""
        steps = self.bucket_reso_steps
        aspect = width / height
        resized_width = math.sqrt(self.max_area * aspect)
        resized_height = self.max_area / resized_width
        # Round the width or the height to steps, whichever keeps the aspect closer.
        w_rounded = _round_to_steps(resized_width, steps)
        h_in_w = _round_to_steps(w_rounded / aspect, steps)
        h_rounded = _round_to_steps(resized_height, steps)
        w_in_h = _round_to_steps(h_rounded * aspect, steps)
        error_w = abs(w_rounded / h_in_w - aspect) if h_in_w else math.inf
        error_h = abs(w_in_h / h_rounded - aspect) if h_rounded else math.inf
        if error_w < error_h:
            resized = (w_rounded, int(w_rounded / aspect + 0.5))
        else:
            resized = (int(h_rounded * aspect + 0.5), h_rounded)
        bucket = (resized[0] - resized[0] % steps, resized[1] - resized[1] % steps)
        return bucket, resized


@lru_cache(maxsize=64)
def _predefined(resolution: Size, min_size: int, max_size: int, steps: int) -> list[Size]:
    return make_bucket_resolutions(resolution, min_size, max_size, steps)


@lru_cache(maxsize=4096)
def _largest_bucket(
    width: int, height: int, max_area: int, steps: int, max_error: float
) -> tuple[Size, Size] | None:
    """The largest-area bucket within ``max_area`` that the image covers when scaled down.

    Among buckets whose aspect ratio is within ``max_error`` (relative) of the image's,
    the largest wins; ties go to the smaller aspect error. ``None`` when none qualifies.
    """
    aspect = width / height
    best: tuple[int, float, Size] | None = None
    for bucket_w in range(steps, width + 1, steps):
        # Tallest bucket for this width that fits the area, the image and the tolerance:
        # a taller bucket is a larger one, so it is the only candidate worth scoring.
        tallest = min(height, max_area // bucket_w, int(bucket_w / (aspect * (1 - max_error))))
        bucket_h = _floor(tallest, steps)
        if bucket_h < steps:
            if max_area // bucket_w < steps:
                break  # wider buckets only get flatter
            continue
        error = abs(bucket_w / bucket_h - aspect) / aspect
        if error > max_error:
            continue
        key = (bucket_w * bucket_h, -error)
        if best is None or key > (best[0], best[1]):
            best = (key[0], key[1], (bucket_w, bucket_h))
    if best is None:
        return None
    bucket = best[2]
    scale = max(bucket[0] / width, bucket[1] / height)  # <= 1: the bucket fits the image
    resized = (
        max(bucket[0], int(width * scale + 0.5)),
        max(bucket[1], int(height * scale + 0.5)),
    )
    return bucket, resized


def _floor(value: float, steps: int) -> int:
    return int(value) - int(value) % steps


def group_by_bucket(assignments: Iterable[BucketAssignment]) -> dict[Size, list[int]]:
    """Indices of ``assignments`` per bucket, buckets sorted; batches never mix buckets."""
    groups: dict[Size, list[int]] = {}
    for index, assignment in enumerate(assignments):
        groups.setdefault(assignment.bucket, []).append(index)
    return dict(sorted(groups.items()))

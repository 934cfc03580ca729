"""One untrusted image in, one clean RGB image out (or a :class:`DatasetError`).

Order matters for safety: size and format are checked from the header before any
pixel is decoded; decoding happens once, fully (a truncated file fails instead of being
half-loaded); the output is re-encoded from pixels only, so EXIF, GPS and text chunks
never survive.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from lab.dataset.colour import to_srgb
from lab.dataset.reasons import DatasetError, Notice, Reason, Warn
from lab.dataset.settings import IngestSettings
from lab.dataset.sniff import sniff
from lab.families import BaseFamily

__all__ = ["NormalisedImage", "normalise_image", "perceptual_hash"]

logger = logging.getLogger(__name__)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")


@dataclass(frozen=True, slots=True)
class NormalisedImage:
    """An accepted image: the re-encoded bytes and the facts the report needs."""

    data: bytes
    ext: str
    """``jpg`` (from JPEG sources) or ``png`` (everything else, lossless)."""
    sha256: str
    """Of ``data``: the content address it is stored under."""
    source_sha256: str
    width: int
    height: int
    source_format: str
    source_size: tuple[int, int]
    phash: str
    notices: tuple[Notice, ...] = field(default=())


def normalise_image(
    data: bytes,
    source: str,
    settings: IngestSettings | None = None,
    family: BaseFamily | None = None,
) -> NormalisedImage:
    """Check, decode and normalise one upload; raise :class:`DatasetError` to refuse it.

    ``source`` is the name shown back to the uploader (never used as a path).
    """
    settings = settings or IngestSettings()
    if not data:
        raise DatasetError(Reason.EMPTY_FILE, f"{source}: the file is empty.")
    if len(data) > settings.max_file_bytes:
        raise DatasetError(
            Reason.FILE_TOO_LARGE,
            f"{source}: {len(data) / 2**20:.1f} MiB is over the "
            f"{settings.max_file_bytes / 2**20:.0f} MiB limit for one file.",
        )
    notices: list[Notice] = []
    image = _open(data, source, settings)
    # MPO (phone and camera JPEGs carrying extra pictures such as a depth map or a
    # preview) is a JPEG whose first picture is the photo.
    source_format = "JPEG" if image.format == "MPO" else image.format or "?"
    source_size = image.size
    _check_frames(image, source, settings, notices)
    _check_small(image.size, source, settings, family, notices)
    scale = settings.max_side / max(image.size)
    if scale < 1 and source_format == "JPEG":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: far less work for big photos.
        image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    _check_decode_memory(image, source, len(data), settings)
    _load(image, source, _cut_short(source_format, data))
    rgb = to_srgb(image, source, settings.background, notices)
    del image  # the decoded original: often the biggest copy; free it before resizing
    rgb = _downscale(rgb, source, settings.max_side, settings.downscale_filter, notices)
    encoded, ext = _encode(rgb, source_format, settings)
    return NormalisedImage(
        data=encoded,
        ext=ext,
        sha256=hashlib.sha256(encoded).hexdigest(),
        source_sha256=hashlib.sha256(data).hexdigest(),
        width=rgb.width,
        height=rgb.height,
        source_format=source_format,
        source_size=source_size,
        phash=perceptual_hash(rgb),
        notices=tuple(notices),
    )


def perceptual_hash(image: Image.Image) -> str:
    """A 64-bit DCT perceptual hash as 16 hex digits: imagehash's ``phash`` algorithm.

    Computed with a numpy DCT matrix instead of ``scipy.fftpack`` (whose import costs
    each worker process a third of a second) and on a small copy first: ``phash`` only
    looks at 32×32 pixels anyway.
    """
    small = image.convert("L") if image.mode != "L" else image
    if max(small.size) > 256:
        small = small.copy()
        small.thumbnail((256, 256), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels = np.asarray(
        small.resize((_PHASH_SIDE, _PHASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float64
    )
    low = (_DCT @ pixels @ _DCT.T)[:8, :8]
    bits = (low > np.median(low)).flatten()
    return f"{int(''.join('1' if bit else '0' for bit in bits), 2):016x}"


def _dct_matrix(n: int) -> np.ndarray:
    """Unnormalised DCT-II (scipy.fftpack's default): ``2 Σ x[j] cos(π k (2j+1) / 2n)``."""
    k = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * j + 1) / (2 * n))


_PHASH_SIDE = 32
_DCT = _dct_matrix(_PHASH_SIDE)


# -- header-only checks -----------------------------------------------------------------


def _open(data: bytes, source: str, settings: IngestSettings) -> ImageFile.ImageFile:
    sniffed = sniff(data)
    if sniffed.kind == "archive":
        raise DatasetError(
            Reason.NESTED_ARCHIVE,
            f"{source}: is a {sniffed.label} archive; archives inside an upload are not opened.",
        )
    if not sniffed.accepted:
        if sniffed.kind == "image":
            raise DatasetError(
                Reason.UNSUPPORTED_FORMAT,
                f"{source}: {sniffed.label} images are not accepted; convert it to PNG or JPEG.",
            )
        if sniffed.label in ("SVG", "PDF"):
            raise DatasetError(
                Reason.UNSUPPORTED_FORMAT,
                f"{source}: is a {sniffed.label} document, not a raster image; "
                "export it as PNG or JPEG.",
            )
        raise DatasetError(
            Reason.NOT_AN_IMAGE, f"{source}: is not an image (it looks like {sniffed.label})."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:
        raise _bomb(source, None, settings) from error
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError, EOFError) as error:
        logger.debug("%s: cannot open header: %s", source, error)
        if "too large" in str(error).lower():
            raise DatasetError(
                Reason.DECOMPRESSION_BOMB,
                f"{source}: contains a chunk that expands far too much; refused.",
            ) from error
        if isinstance(error, EOFError) or _cut_short(sniffed.label, data):
            raise DatasetError(
                Reason.TRUNCATED, f"{source}: the {sniffed.label} file is cut short."
            ) from error
        raise DatasetError(
            Reason.CORRUPT, f"{source}: the {sniffed.label} file is damaged and cannot be read."
        ) from error
    if image.width <= 0 or image.height <= 0:
        raise DatasetError(Reason.CORRUPT, f"{source}: the image has no pixels.")
    if image.width * image.height > settings.max_pixels:
        raise _bomb(source, image.size, settings)
    return image


def _bomb(source: str, size: tuple[int, int] | None, settings: IngestSettings) -> DatasetError:
    what = f"{size[0]}×{size[1]} pixels" if size else "too many pixels"
    return DatasetError(
        Reason.DECOMPRESSION_BOMB,
        f"{source}: declares {what}, over the {settings.max_pixels / 1e6:.0f} MP limit; "
        "refused without decoding.",
    )


def _check_frames(
    image: Image.Image, source: str, settings: IngestSettings, notices: list[Notice]
) -> None:
    if not getattr(image, "is_animated", False) or image.format == "MPO":
        return
    frames = getattr(image, "n_frames", 2)
    if settings.animated == "reject":
        raise DatasetError(
            Reason.ANIMATED,
            f"{source}: is animated ({frames} frames); upload a still image.",
        )
    image.seek(0)
    notices.append(
        Notice(
            source,
            Warn.ANIMATED_FIRST_FRAME,
            f"{source}: animated ({frames} frames); only the first frame is kept.",
        )
    )


def _check_small(
    size: tuple[int, int],
    source: str,
    settings: IngestSettings,
    family: BaseFamily | None,
    notices: list[Notice],
) -> None:
    short = min(size)
    if short < settings.absolute_min_side:
        raise DatasetError(
            Reason.TOO_SMALL,
            f"{source}: {size[0]}×{size[1]} is far too small to train on "
            f"(under {settings.absolute_min_side} px).",
        )
    minimum = settings.min_side_for(family)
    if short >= minimum:
        return
    message = (
        f"{source}: {size[0]}×{size[1]} has a shortest side under {minimum} px, the minimum "
        f"for {family.value if family else 'this lab'}; upscale it or replace it."
    )
    if settings.too_small == "reject":
        raise DatasetError(Reason.TOO_SMALL, message)
    notices.append(Notice(source, Warn.SMALL_IMAGE, message))


# Bytes of working memory per pixel while decoding and converting, measured: Pillow
# keeps RGB as 4 bytes a pixel, and the conversions to 8-bit sRGB hold a second copy
# (and, with transparency or 16-bit depth, a third and a fourth).
_WORK_BYTES_OPAQUE = 6
_WORK_BYTES_HEAVY = 12
_HEAVY_MODES = frozenset({"RGBA", "LA", "La", "RGBa", "PA", "I;16", "I;16B", "I;16L", "I;16N",
                          "I", "F", "CMYK", "YCbCr", "LAB", "HSV"})  # fmt: skip


def _check_decode_memory(
    image: Image.Image, source: str, data_size: int, settings: IngestSettings
) -> None:
    """Refuse, before decoding, an image whose pixels would need more memory than the
    lab allows one upload (the pixel limit alone lets a 200 KB PNG need 400 MiB)."""
    heavy = image.mode in _HEAVY_MODES or "transparency" in image.info
    per_pixel = _WORK_BYTES_HEAVY if heavy else _WORK_BYTES_OPAQUE
    need = image.width * image.height * per_pixel + data_size
    if need <= settings.max_decode_bytes:
        return
    allowed = (settings.max_decode_bytes - data_size) / per_pixel / 1e6
    raise DatasetError(
        Reason.DECOMPRESSION_BOMB,
        f"{source}: {image.width}×{image.height} pixels"
        + (" with transparency or 16-bit depth" if heavy else "")
        + f" would need about {need / 2**20:.0f} MiB to decode, over the lab's "
        f"{settings.max_decode_bytes / 2**20:.0f} MiB (about {max(allowed, 0):.0f} MP for "
        "such an image); downscale it, or send it as a JPEG.",
    )


# -- decoding and conversion ------------------------------------------------------------


def _cut_short(label: str, data: bytes) -> bool:
    """Whether the container says the file is incomplete (used to name a decode error)."""
    if len(data) < 64:
        return True
    if label == "WEBP":
        return int.from_bytes(data[4:8], "little") + 8 > len(data)
    if label == "PNG":
        return b"IEND" not in data[-4096:]
    if label == "JPEG":
        return b"\xff\xd9" not in data[-4096:]
    return False


def file_is_cut_short(path: Path, label: str) -> bool:
    """:func:`_cut_short` for a file on disk, reading only its head and tail (the trainer
    checks every image of a folder this way before training starts)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(64)
        handle.seek(max(0, size - 4096))
        tail = handle.read()
    if size < 64:
        return True
    if label == "WEBP":
        return int.from_bytes(head[4:8], "little") + 8 > size
    return _cut_short(label, head + tail) if label in ("PNG", "JPEG") else False


def _load(image: Image.Image, source: str, cut_short: bool) -> None:
    """Decode every pixel now; a file that stops early is refused, never half-loaded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError as error:
        raise DatasetError(
            Reason.DECOMPRESSION_BOMB, f"{source}: expands to too many pixels; refused."
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, IndexError) as error:
        text = str(error).lower()
        if cut_short or isinstance(error, EOFError) or "truncated" in text:
            raise DatasetError(
                Reason.TRUNCATED,
                f"{source}: the file is cut short (incomplete upload?); it was not used.",
            ) from error
        if "too large" in text or "decompressed data" in text:
            raise DatasetError(
                Reason.DECOMPRESSION_BOMB,
                f"{source}: contains a chunk that expands far too much; refused.",
            ) from error
        raise DatasetError(
            Reason.CORRUPT, f"{source}: the image data is damaged and cannot be decoded."
        ) from error


_FILTERS = {
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _downscale(
    image: Image.Image, source: str, max_side: int, resample: str, notices: list[Notice]
) -> Image.Image:
    longest = max(image.size)
    if longest <= max_side:
        return image
    scale = max_side / longest
    if image.width >= image.height:
        size = (max_side, max(1, round(image.height * scale)))
    else:
        size = (max(1, round(image.width * scale)), max_side)
    notices.append(
        Notice(
            source,
            Warn.DOWNSCALED,
            f"{source}: downscaled from {image.width}×{image.height} to {size[0]}×{size[1]} "
            f"(longest side capped at {max_side} px).",
        )
    )
    return image.resize(size, _FILTERS[resample], reducing_gap=3.0)


def _encode(image: Image.Image, source_format: str, settings: IngestSettings) -> tuple[bytes, str]:
    """Re-encode from pixels only: no EXIF, GPS, ICC or text chunks are written."""
    out = io.BytesIO()
    if source_format == "JPEG":
        image.save(out, "JPEG", quality=settings.jpeg_quality, icc_profile=None, exif=b"")
        return out.getvalue(), "jpg"
    image.save(out, "PNG", compress_level=settings.png_compress_level, icc_profile=None)
    return out.getvalue(), "png"

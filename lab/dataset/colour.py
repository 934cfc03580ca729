"""Pixels to 8-bit sRGB: EXIF orientation, bit depth, colour profile, transparency.

Each step that changes something appends a :class:`Notice` so the uploader sees it.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageCms, ImageOps

from lab.dataset.reasons import Notice, Warn

__all__ = ["to_srgb"]

logger = logging.getLogger(__name__)

_ORIENTATION_TAG = 0x0112
_SRGB = ImageCms.createProfile("sRGB")


def to_srgb(
    image: Image.Image,
    source: str,
    background: tuple[int, int, int],
    notices: list[Notice],
) -> Image.Image:
    """Orientation, bit depth, colour profile, palette, alpha → an 8-bit sRGB image.

    Transparency is composited onto ``background``, never dropped.
    """
    original_mode = image.mode
    image = _apply_orientation(image, source, notices)
    image = _wide_to_8bit(image)
    image = _apply_icc(image, source, notices)
    has_alpha = image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or ("transparency" in image.info)
    if has_alpha:
        # Each full-size copy of a big image is tens of MiB: drop every one as soon as
        # the next exists, so at most two are alive at once.
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        del image
        low, _high = rgba.getchannel("A").getextrema()
        if low < 255:
            canvas = Image.new("RGBA", rgba.size, (*background, 255))
            canvas.alpha_composite(rgba)
            rgba = canvas
            del canvas
            notices.append(
                Notice(
                    source,
                    Warn.TRANSPARENCY_FLATTENED,
                    f"{source}: transparent areas were filled with "
                    f"#{''.join(f'{c:02x}' for c in background)}.",
                )
            )
        image = rgba.convert("RGB")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if original_mode not in ("RGB", "RGBA"):
        notices.append(
            Notice(source, Warn.CONVERTED, f"{source}: converted from {original_mode} to RGB.")
        )
    return image


def _apply_orientation(image: Image.Image, source: str, notices: list[Notice]) -> Image.Image:
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return image
    rotated = ImageOps.exif_transpose(image)
    notices.append(
        Notice(
            source,
            Warn.ORIENTATION_APPLIED,
            f"{source}: rotated upright from its EXIF orientation ({orientation}).",
        )
    )
    return rotated


def _wide_to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale to 8 bits by scaling, not clipping (Pillow clips at 255)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        scaled = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(np.rint(values * 255.0 / top), 0, 255).astype(np.uint8))
    return image


def _apply_icc(image: Image.Image, source: str, notices: list[Notice]) -> Image.Image:
    """Convert an embedded non-sRGB profile (Adobe RGB, Display P3, CMYK press) to sRGB."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile).strip()
        if "srgb" in description.lower() and image.mode != "CMYK":
            return image
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, profile, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as error:
        logger.debug("%s: colour profile ignored: %s", source, error)
        return image
    if converted is None:  # pragma: no cover - only with inPlace=True
        return image
    notices.append(
        Notice(
            source,
            Warn.COLOR_PROFILE,
            f"{source}: colours converted from the '{description}' profile to sRGB.",
        )
    )
    return converted

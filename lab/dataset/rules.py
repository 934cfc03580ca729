"""Which files of a folder are training images: one set of rules for ``dataset check``,
``dataset import`` and the trainer.

Images are JPEG, PNG and WebP (what import accepts and stores); caption files end in
``.txt`` or kohya's ``.caption``; hidden files and what operating systems add to
folders (macOS ``._IMG_0001.JPG``, ``.DS_Store``, ``Thumbs.db``) are skipped. An image's
size is the size it is shown at: EXIF orientation 5–8 swaps width and height.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from PIL import Image

from lab.dataset.archive import is_system_file

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
"""The formats import accepts (:data:`lab.dataset.sniff.ACCEPTED`), by file suffix."""
OTHER_IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".jxl"})
"""Images in formats we do not train on: named, never silently used or skipped."""
CAPTION_SUFFIXES = frozenset({".txt", ".caption"})
_EXIF_ORIENTATION = 0x0112
_KOHYA_FOLDER = re.compile(r"^\d+_")


def trained_folders(root: Path) -> list[Path]:
    """The folders whose images the trainer reads from ``root``: its ``N_name``
    subfolders when it has any (a kohya ``train_data_dir``), else ``root`` itself. Images
    deeper down (``raw/``, nested folders) are not trained."""
    kohya = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and _KOHYA_FOLDER.match(p.name) and not is_skipped(p.name)
    )
    return kohya or [root]


def is_skipped(relative: str) -> bool:
    """Hidden files and folders, and operating-system side files."""
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    return is_system_file(relative) or any(part.startswith(".") for part in parts)


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: EXIF orientations 5–8 are rotated by 90°. Reads the
    tag only, without decoding or transposing the pixels."""
    width, height = image.size
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):
        orientation = 1
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)

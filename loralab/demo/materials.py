"""What the scripted members upload: distinct noise images (distinct perceptual hashes,
so the ingest sees no near-duplicates among them), a corrupt file, zips."""

from __future__ import annotations

import io
import random
import zipfile

from PIL import Image


def png(seed: int, size: tuple[int, int] = (512, 640)) -> bytes:
    """A PNG of coloured 16-pixel blocks, different for every `seed`."""
    rng = random.Random(seed)
    width, height = size[0] // 16, size[1] // 16
    small = Image.new("RGB", (width, height))
    small.putdata(
        [
            (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            for _ in range(width * height)
        ]
    )
    out = io.BytesIO()
    small.resize(size, Image.NEAREST).save(out, "PNG")
    return out.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    """A zip archive holding `files` (name → bytes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()

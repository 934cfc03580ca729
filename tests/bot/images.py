"""Upload material: distinct noise images (distinct perceptual hashes), bad files, zips."""

from __future__ import annotations

import io
import random
import zipfile

from PIL import Image


def png(seed: int, size: tuple[int, int] = (512, 640)) -> bytes:
    rng = random.Random(seed)
    w, h = size[0] // 16, size[1] // 16
    small = Image.new("RGB", (w, h))
    small.putdata(
        [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(w * h)]
    )
    out = io.BytesIO()
    small.resize(size, Image.NEAREST).save(out, "PNG")
    return out.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()

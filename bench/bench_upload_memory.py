"""Peak memory of the bot for one hostile upload: this checkout beside another one.

    .venv/bin/python -m bench.bench_upload_memory [--before /path/to/old/checkout]

Builds the uploads a hostile member can send within Discord's and the lab's limits,
then, for each, starts a fresh Python process that imports the bot (its resting
memory), runs the bot's own upload path on it (fetch → ingest → store, as
``/dataset upload`` does) and reports its peak resident memory (``VmHWM``):

* ``bomb.zip``: ~6 MB of entries that each inflate to just under the 50 MiB
  per-file cap (~170:1, under the 200:1 bomb ratio), about 1 GiB in all;
* ``3 × bomb.zip``: the same archive three times in one command (three attachments);
* ``big.png``: one PNG at the lab's pixel limit (60 MP), a few MB on the wire;
* ``opaque.png`` (30.6 MP) and ``alpha.png`` (15.4 MP with transparency): the largest
  PNGs the decode-memory limit (``ingest.max_decode_bytes``) lets through.

With ``--before`` each case also runs on the other checkout (e.g. an extracted copy
of ``main``), side by side in one invocation. Target: under 300 MiB per upload.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

MiB = 2**20
HERE = Path(__file__).resolve().parent.parent

CHILD = r"""
import inspect, json, os, resource, sys, tempfile
from pathlib import Path
import bot.app  # noqa: F401  (the bot's resting memory: discord, sqlalchemy, the cogs)
from bot.exts.dataset import _logic
from db.dataset import TicketBasics
from lab.families import BaseFamily
from lab.settings import BotSettings
from lab.storage import LocalStorage

def peak_mib():
    # VmHWM, not ru_maxrss: ru_maxrss keeps the parent's peak across fork + exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

uploads = json.loads(sys.argv[1])
rest = peak_mib()
settings = BotSettings().ingest.model_copy(update={"workers": 1})
basics = TicketBasics(BaseFamily.SD15, "ohwx", "woman", {})
with tempfile.TemporaryDirectory() as tmp:
    storage = LocalStorage(Path(tmp) / "store")
    files = []
    from bot.exts.dataset import _cog
    download = getattr(_cog, "download", None) or _logic.download  # it moved to the cog
    spools = "folder" in inspect.signature(download).parameters
    for index, path in enumerate(uploads):
        data = Path(path).read_bytes()  # what attachment.read() returns
        if spools:  # the download writes each attachment to a file before the next
            spool = Path(tmp) / f"{index}.upload"
            spool.write_bytes(data)
            del data
            files.append((Path(path).name, spool))
        else:
            files.append((Path(path).name, data))
    outcome = _logic.ingest_uploads(files, storage, settings, basics)
print(json.dumps({"rest": rest, "peak": peak_mib(), "lines": len(outcome.lines)}))
"""


def bomb_zip(path: Path, entries: int = 21, entry_bytes: int = 49 * MiB) -> None:
    """Entries of mostly zeros with sparse random bytes: ~170:1 under deflate."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(entries):
            data = np.zeros(entry_bytes, dtype=np.uint8)
            spots = rng.integers(0, entry_bytes, entry_bytes // 800)
            data[spots] = rng.integers(0, 256, spots.size, dtype=np.uint8)
            archive.writestr(f"entry{i:02d}.png", data.tobytes())


def flat_png(path: Path, width: int, height: int, mode: str = "RGB") -> None:
    """A flat field with a little noise (half transparent in RGBA): a small file whose
    pixels take width × height × 4 bytes once decoded."""
    rng = np.random.default_rng(1)
    pixels = np.full((height, width, len(mode)), 128, dtype=np.uint8)
    pixels[::97, ::89] = rng.integers(0, 256, pixels[::97, ::89].shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG", compress_level=9)
    path.write_bytes(buffer.getvalue())


def measure(code: Path, uploads: list[Path]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([str(p) for p in uploads])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout to run beside this one")
    args = parser.parse_args()
    codes = {"this checkout": HERE}
    if args.before:
        codes = {"before": args.before.resolve(), "after": HERE}
    with tempfile.TemporaryDirectory() as tmp:
        bomb, png = Path(tmp) / "bomb.zip", Path(tmp) / "big.png"
        opaque, alpha = Path(tmp) / "opaque.png", Path(tmp) / "alpha.png"
        bomb_zip(bomb)
        flat_png(png, 9000, 6660)
        flat_png(opaque, 6800, 4500)
        flat_png(alpha, 4800, 3200, "RGBA")
        with zipfile.ZipFile(bomb) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
        print(f"bomb.zip: {bomb.stat().st_size / MiB:.1f} MiB inflating to "
              f"{inflated / MiB:.0f} MiB; big.png: {png.stat().st_size / MiB:.1f} MiB")  # fmt: skip
        cases = {
            "bomb.zip": [bomb],
            "3 × bomb.zip": [bomb] * 3,
            "big.png": [png],
            "opaque.png": [opaque],
            "alpha.png": [alpha],
        }
        print(f"{'upload':14} " + " ".join(f"{label:>24}" for label in codes))
        for case, uploads in cases.items():
            cells = []
            for code in codes.values():
                figures = measure(code, uploads)
                cells.append(f"{figures['peak']:7.0f} MiB (rest {figures['rest']:4.0f})")
            print(f"{case:14} " + " ".join(f"{cell:>24}" for cell in cells), flush=True)
    print("peak resident memory of the bot process; target: under 300 MiB per upload")


if __name__ == "__main__":
    main()

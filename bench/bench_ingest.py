"""Ingestion throughput: the full safe ingest beside a bare Pillow decode + save.

    .venv/bin/python -m bench.bench_ingest [--count 24] [--width 4000] [--height 3000]

Generates ``count`` photo-sized JPEGs (smooth gradients plus sensor-like noise, so
they compress like photos), then times, in this process and on the same files:

* bare: ``Image.open`` + ``load`` + ``save`` as JPEG (quality 95), one file after the
  other — what a hand-written conversion script does;
* ingest: ``lab.dataset.ingest`` with its defaults (sniff, header guards, decode,
  EXIF orientation, sRGB, cap to 3000 px, re-encode, SHA-256, perceptual hash,
  duplicate search, content-addressed store on disk), parallel over the cores.

Prints images/s for both and the ratio ingest time / bare time (target: ≤ 1.5).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lab.dataset.ingest import FolderStore, ingest
from lab.dataset.settings import IngestSettings
from lab.dataset.sources import from_folder


def make_photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like image: a low-resolution colour field scaled up, plus noise."""
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    base = Image.fromarray(field, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 6, (height, width, 1)).astype(np.int16)
    pixels = np.clip(np.asarray(base, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def generate(folder: Path, count: int, width: int, height: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:03d}.jpg"
        make_photo(width, height, seed=i).save(path, quality=92)
        paths.append(path)
    return paths


def bare(paths: list[Path]) -> float:
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.load()
            image.save(io.BytesIO(), "JPEG", quality=95)
    return time.perf_counter() - started


def full_ingest(folder: Path, dest: Path, workers: int | None) -> tuple[float, int]:
    settings = IngestSettings(workers=workers)
    started = time.perf_counter()
    result = ingest(from_folder(folder, settings), FolderStore(dest), settings)
    elapsed = time.perf_counter() - started
    if result.rejected:
        raise SystemExit(f"unexpected rejections: {[r.as_dict() for r in result.rejected]}")
    return elapsed, len(result.accepted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "src"
        folder.mkdir()
        print(f"generating {args.count} JPEGs of {args.width}x{args.height} ...", flush=True)
        paths = generate(folder, args.count, args.width, args.height)
        mb = sum(p.stat().st_size for p in paths) / 2**20
        bare_s = min(bare(paths) for _ in range(args.repeat))
        ingest_runs = []
        for run in range(args.repeat):
            elapsed, accepted = full_ingest(folder, Path(tmp) / f"dest{run}", args.workers)
            ingest_runs.append(elapsed)
        ingest_s = min(ingest_runs)

    n = args.count
    print(f"cores: {os.cpu_count()}, workers: {args.workers or os.cpu_count()}, input {mb:.0f} MiB")
    print(f"bare Pillow decode+save : {bare_s:7.2f} s  {n / bare_s:6.2f} images/s")
    print(f"full ingest             : {ingest_s:7.2f} s  {n / ingest_s:6.2f} images/s")
    print(f"ratio ingest/bare time  : {ingest_s / bare_s:7.2f}x  (target <= 1.5x)")
    assert accepted == n


if __name__ == "__main__":
    main()

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


def bare(paths: list[Path]) -> tuple[float, float]:
    """(wall s, CPU s) of open + load + save as JPEG, one file after the other."""
    started, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        with Image.open(path) as image:
            image.load()
            image.save(io.BytesIO(), "JPEG", quality=95)
    return time.perf_counter() - started, time.process_time() - cpu


def full_ingest(folder: Path, dest: Path, workers: int | None) -> tuple[float, float, int]:
    """(wall s, CPU s of all threads, accepted) of the full ingest into ``dest``."""
    settings = IngestSettings(workers=workers)
    started, cpu = time.perf_counter(), time.process_time()
    result = ingest(from_folder(folder, settings), FolderStore(dest), settings)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.rejected:
        raise SystemExit(f"unexpected rejections: {[r.as_dict() for r in result.rejected]}")
    return elapsed, cpu, len(result.accepted)


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
        load_before = os.getloadavg()[0]
        # Interleaved, best of N each: other load on the machine hits both alike.
        bare_runs, ingest_runs = [], []
        for run in range(args.repeat):
            bare_runs.append(bare(paths))
            *timing, accepted = full_ingest(folder, Path(tmp) / f"dest{run}", args.workers)
            ingest_runs.append(tuple(timing))
            assert accepted == args.count
        bare_s, bare_cpu = min(bare_runs)
        ingest_s, ingest_cpu = min(ingest_runs)

    n = args.count
    workers = args.workers or os.cpu_count()
    print(f"cores: {os.cpu_count()}, ingest workers: {workers}, input {mb:.0f} MiB, "
          f"load average before: {load_before:.2f}")  # fmt: skip
    print(f"bare Pillow decode+save : {bare_s:6.2f} s wall {n / bare_s:6.2f} images/s "
          f"({bare_cpu / n * 1000:4.0f} ms CPU/image)")  # fmt: skip
    print(f"full ingest             : {ingest_s:6.2f} s wall {n / ingest_s:6.2f} images/s "
          f"({ingest_cpu / n * 1000:4.0f} ms CPU/image)")  # fmt: skip
    print(f"ratio ingest/bare       : {ingest_s / bare_s:6.2f}x wall time (target <= 1.5x), "
          f"{ingest_cpu / bare_cpu:.2f}x CPU time")  # fmt: skip


if __name__ == "__main__":
    main()

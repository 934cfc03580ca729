"""The whole GPU check in one call: ours beside kohya, SD1.5 and SDXL, on an H200.

    python -m bench.gpu_check --sd-scripts sd-scripts --wheels .whl       # ~8-10 min
    python -m bench.gpu_check --tiny --sd-scripts ~/sd-scripts --kohya-python PY   # CPU

Runs :mod:`bench.kohya_side_by_side` for SD1.5 at 512² (batch 4, rank 32) and SDXL at
1024² (batch 2, rank 32) on random-init models with the real shapes, built in code;
prints images/s and peak memory for both, the ratio, each figure as a fraction of the
GPU's bf16 ceiling (the FLOP counts of docs/trainer.md), and which CUDA paths ran:
bf16 weights, channels-last, the fused AdamW, torch.compile graphs, and where the text
encoders were during the steps (``cpu`` = offloaded after caching).

``--tiny`` is the CPU dry run: SD1.5's shapes at 64² (batch 1, 2 steps after 1, one
round), to show the check works end to end; SDXL is skipped there (its 2.6 B-parameter
UNet in fp32 does not fit beside other work on a small machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.kohya_side_by_side import Setup, compare, kohya_from, report
from bench.train_throughput import PEAK_BF16_TFLOPS, TFLOP_PER_IMAGE

CASES = {"sd15": (512, 4), "sdxl": (1024, 2)}


def ceiling_line(setup: Setup, best: dict[str, dict]) -> str:
    device = best["ours"]["device"]
    gpu = next((g for g in PEAK_BF16_TFLOPS if g in device), None)
    if gpu is None:
        return "ceiling n/a (needs an H100/H200)"
    tflop, reference = TFLOP_PER_IMAGE[setup.arch]
    ceiling = PEAK_BF16_TFLOPS[gpu] / (tflop * (setup.resolution / reference) ** 2)
    parts = [
        f"{side} {f['images_per_second'] / ceiling:.1%}"
        for side, f in best.items()
        if "error" not in f
    ]
    return f"ceiling ≈{ceiling:.0f} images/s ({PEAK_BF16_TFLOPS[gpu]:.0f} TFLOP/s): " + ", ".join(
        parts
    )


def paths_line(best: dict[str, dict]) -> str:
    lines = []
    for side, figures in best.items():
        if "error" in figures:
            continue
        p = figures["paths"]
        lines.append(
            f"paths {side}: weights {p.get('unet_dtype')}, channels-last "
            f"{p.get('channels_last')}, fused AdamW {p.get('fused_optimizer')}, compiled "
            f"graphs {p.get('compiled_graphs')}, text encoders on {p.get('text_encoders_on')}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sd-scripts", type=Path)
    p.add_argument("--kohya-venv", type=Path, default=Path(tempfile.gettempdir()) / "kohya-venv")
    p.add_argument("--kohya-python", type=Path)
    p.add_argument("--wheels", type=Path)
    p.add_argument("--tiny", "--dry-run", action="store_true", help="the CPU dry run")
    p.add_argument("--arch", choices=sorted(CASES), action="append", help="default: both")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="ours: regional torch.compile")
    args = p.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        sys.exit("no CUDA device: run with --tiny for the CPU dry run")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if cuda else 'cpu'}")
    sd_scripts, python = kohya_from(args)
    arches = args.arch or (["sd15"] if args.tiny else ["sd15", "sdxl"])
    started = time.perf_counter()
    for arch in arches:
        resolution, batch = CASES[arch]
        setup = Setup(
            arch=arch,
            resolution=64 if args.tiny else resolution,
            batch=1 if args.tiny else batch,
            rank=32,
            steps=2 if args.tiny else args.steps,
            warmup=1 if args.tiny else args.warmup,
            cuda=cuda,
            compile=args.compile,
        )
        repeat = 1 if args.tiny else args.repeat
        with tempfile.TemporaryDirectory() as tmp:
            best = compare(setup, sd_scripts=sd_scripts, python=python, repeat=repeat,
                           root=Path(tmp))  # fmt: skip
        report(setup, best, repeat)
        print(ceiling_line(setup, best))
        print(paths_line(best), flush=True)
    print(f"gpu check done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

"""Trainer throughput on the tiny SD1.5-shaped model (or a full-size SD1.5 UNet on a GPU).

    .venv/bin/python -m bench.bench_trainer [--epochs 20] [--batch 2] [--threads 1]
    .venv/bin/python -m bench.bench_trainer --full-unet --resolution 512 --batch 8  # GPU

Builds the model and a generated dataset in a temporary folder (nothing is downloaded),
runs :func:`trainer.train` once to warm up and once to measure, and prints steps/s and
images/s of the measured run (latents cached, so the loop itself is timed).

With ``--full-unet`` the UNet has SD1.5's real shape (860 M parameters, random init); on
CUDA the result is also shown as a fraction of the arithmetic ceiling from
``docs/trainer.md``: ≈1.73 TFLOP per 512² image per step against ≈790 TFLOP/s of bf16
on an H100 (≈460 images/s).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

SD15_TFLOP_PER_512_IMAGE = 1.73
H100_BF16_TFLOPS = 790.0


def _full_unet(model_dir: Path) -> None:
    """Swap the tiny UNet for a random-init one with SD1.5's real configuration."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        cross_attention_dim=32,  # the tiny text encoder's width; the rest is SD1.5's
        attention_head_dim=8,
    )
    unet.save_pretrained(model_dir / "unet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument("--full-unet", action="store_true")
    args = parser.parse_args()

    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(args.threads)
    from lab.training.config import build_config
    from trainer.loop import train
    from trainer.tiny import build_dataset, build_tiny_sd15, make_image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_sd15(root)
        if args.full_unet:
            _full_unet(model)
        data = build_dataset(root / "data", repeats=1, count=0)
        for i in range(args.images):
            size = (args.resolution, args.resolution)
            make_image(data / "1_sks" / f"img{i}.png", size, seed=i)
            (data / "1_sks" / f"img{i}.txt").write_text("sks dog, red ball")
        values = {
            "pretrained_model_name_or_path": str(model),
            "train_data_dir": str(data),
            "output_dir": str(root / "out"),
            "resolution": args.resolution,
            "min_bucket_reso": min(64, args.resolution // 2),
            "max_bucket_reso": args.resolution * 2,
            "bucket_reso_steps": 32,
            "network_dim": 4 if not args.full_unet else 32,
            "network_alpha": 4 if not args.full_unet else 32,
            "network_train_unet_only": True,
            "train_batch_size": args.batch,
            "max_train_epochs": args.epochs,
            "mixed_precision": args.mixed_precision,
            "seed": 1,
        }
        train(build_config({**values, "max_train_epochs": 1}))  # warm-up: caches, allocator
        result = train(build_config(values))
    device = "cuda" if torch.cuda.is_available() else f"cpu ({args.threads} threads)"
    print(
        f"device {device}, batch {args.batch}, {args.resolution}px, "
        f"{'SD1.5 UNet' if args.full_unet else 'tiny model'}: "
        f"{result.global_step} steps, {result.steps_per_second:.1f} steps/s, "
        f"{result.images_per_second:.1f} images/s"
    )
    if args.full_unet and torch.cuda.is_available():
        flop_per_image = SD15_TFLOP_PER_512_IMAGE * (args.resolution / 512) ** 2
        ceiling = H100_BF16_TFLOPS / flop_per_image
        print(f"ceiling ≈{ceiling:.0f} images/s: {result.images_per_second / ceiling:.1%} of it")


if __name__ == "__main__":
    main()

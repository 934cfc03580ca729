"""How far each app's reading of a DoRA file is from the trained weight change, beside
the plain-LoRA fit (``…-lora-compat.safetensors``) the trainer saves for those apps.

Trains a DoRA (and a DoRA LoCon) network on the tiny SD1.5 and SDXL models, then for
every DoRA module compares ΔW = W' − W (PEFT's merge: what was trained) with

- the compat file's rank-r fit (its recorded relative error);
- ComfyUI/Forge's reading: m · (W + ΔW_lora) / ‖W‖ (output axis, base-weight norm);
- A1111's: m · (W + ΔW_lora) / ‖W + ΔW_lora‖ taken over the input axis;
- diffusers': ΔW_lora only (``dora_scale`` dropped).

Prints ‖ΔW_read − ΔW‖ / ‖ΔW‖ over all modules and the median per module.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python -m bench.dora_compat_fit
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lab.training.config import build_config
from trainer.callbacks import NeverStop, NullCallbacks
from trainer.compat import dora_weight_changes, fit_low_rank
from trainer.formats import file_naming, kohya_module_name
from trainer.loop import Trainer
from trainer.tiny import build_dataset, build_tiny_sd15, build_tiny_sdxl

RANKS = (4, 8, 16, 32)


def _readings(weight: torch.Tensor, tensors: dict, key: str) -> dict[str, torch.Tensor]:
    down = tensors[f"{key}.lora_down.weight"].float()
    up = tensors[f"{key}.lora_up.weight"].float()
    scale = tensors[f"{key}.alpha"].item() / down.shape[0]
    lora = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * scale
    m = tensors[f"{key}.dora_scale"].float()
    tail = [1] * (weight.dim() - 1)
    combined = weight + lora
    base_norm = weight.flatten(1).norm(dim=1).reshape(-1, *tail)
    comfy = m * combined / base_norm - weight
    in_norm = combined.transpose(0, 1).flatten(1).norm(dim=1).reshape(1, -1, *tail[1:])
    a1111 = m * combined / in_norm - weight
    return {"comfyui/forge": comfy, "a1111": a1111, "diffusers": lora}


def measure(model: Path, data: Path, out: Path, args: list[str], epochs: int) -> dict[str, object]:
    values = {
        "pretrained_model_name_or_path": str(model),
        "train_data_dir": str(data),
        "output_dir": str(out),
        "output_name": "dora",
        "resolution": "64,64",
        "min_bucket_reso": 32,
        "max_bucket_reso": 128,
        "bucket_reso_steps": 32,
        "network_module": "lycoris.kohya",
        "network_args": args,
        "network_dim": 4,
        "network_alpha": 4.0,
        "train_batch_size": 2,
        "max_train_epochs": epochs,
        "learning_rate": 1e-2,
        "text_encoder_lr": 5e-3,
        "save_precision": "float",
        "seed": 1,
    }
    trainer = Trainer(build_config(values), NullCallbacks(), NeverStop())
    trainer.run()
    network, base = trainer.session.network, trainer.session.base
    naming = file_naming(base.unet.config, sdxl=base.is_sdxl)
    dora = load_file(trainer.result.final_path)
    compat = trainer.result.final_path.with_name("dora-lora-compat.safetensors")
    meta = safe_open(str(compat), "pt").metadata()
    residual: dict[str, float] = {}
    per_module: dict[str, list[float]] = {}
    energy = 0.0
    for (component, path), delta in dora_weight_changes(network):
        layer = dict(network.components()[component].named_modules())[path]
        weight = layer.get_base_layer().weight.detach().float()
        key = kohya_module_name(component, path, **naming)
        energy += float(delta.double().pow(2).sum())
        for app, read in _readings(weight, dora, key).items():
            error = float((read - delta).double().pow(2).sum())
            residual[app] = residual.get(app, 0.0) + error
            per_module.setdefault(app, []).append(
                (error / max(float(delta.double().pow(2).sum()), 1e-30)) ** 0.5
            )
    figures = {app: (r / energy) ** 0.5 for app, r in residual.items()}
    by_rank = {}
    for rank in RANKS:
        dropped = sum(fit_low_rank(delta, rank)[2] for _, delta in dora_weight_changes(network))
        by_rank[rank] = (dropped / energy) ** 0.5
    medians = {app: statistics.median(v) for app, v in per_module.items()}
    return {
        "modules": len(per_module["diffusers"]),
        "compat": float(meta["loralab_dora_compat_relative_error"]),
        "compat_worst": float(meta["loralab_dora_compat_worst_module_error"]),
        "apps": figures,
        "medians": medians,
        "by_rank": by_rank,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    epochs = parser.parse_args().epochs
    torch.set_num_threads(1)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = {"SD1.5": build_tiny_sd15(root / "m15"), "SDXL": build_tiny_sdxl(root / "mxl")}
        kinds = {
            "DoRA": ["algo=lora", "dora_wd=True"],
            "DoRA LoCon": ["algo=locon", "conv_dim=4", "conv_alpha=4", "dora_wd=True"],
        }
        for family, model in models.items():
            for kind, args in kinds.items():
                data = build_dataset(root / f"data-{family}-{kind}".replace(" ", ""))
                out = root / f"out-{family}-{kind}".replace(" ", "")
                r = measure(model, data, out, args, epochs)
                apps = ", ".join(
                    f"{a} {e:.1%} (median {r['medians'][a]:.1%}, {e / r['compat']:.1f}× the fit)"
                    for a, e in r["apps"].items()  # type: ignore[union-attr]
                )
                print(
                    f"{family} {kind} rank 4, {r['modules']} modules: compat fit error "
                    f"{r['compat']:.2%} (worst module {r['compat_worst']:.2%}); "
                    f"reading the DoRA file: {apps}"
                )
                fits = ", ".join(f"rank {k}: {v:.1%}" for k, v in r["by_rank"].items())  # type: ignore[union-attr]
                print(f"    fit error by rank: {fits}")


if __name__ == "__main__":
    main()

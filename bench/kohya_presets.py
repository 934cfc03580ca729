"""Share of kohya_ss GUI LoRA presets that load unchanged (and, with ``--train``, train
on the tiny model).

Point it at a folder of the GUI's preset files (``presets/lora/*.json`` of a kohya_ss
clone; none is shipped here)::

    python -m bench.kohya_presets /path/to/kohya_ss/presets/lora [--train]

Each preset is turned into the config ``train_network.py --config_file`` reads, the way
the GUI's TOML writer does it (network_args per LoRA type, ``text_encoder_lr`` as a
list, ``noise_offset_type`` choosing the noise keys, ``additional_parameters`` as keys),
changing only paths, resolution (128 px, buckets 64–256) and epochs; nothing else is
edited. The script prints one row per preset: accepted, or the refusal.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

# GUI fields that its TOML writer does not write as keys (they build network_args, are
# launcher options, or are shown under another name).
_GUI_ONLY = {
    "LoRA_type", "LyCORIS_preset", "conv_dim", "conv_alpha", "use_cp", "use_tucker",
    "use_scalar", "decompose_both", "train_norm", "rank_dropout", "module_dropout", "factor",
    "rank_dropout_scale", "bypass_mode", "dora_wd", "constrain", "rescaled", "unit",
    "train_on_input", "block_alphas", "block_dims", "block_lr_zero_threshold",
    "conv_block_alphas", "conv_block_dims", "conv_alphas", "conv_dims", "down_lr_weight",
    "mid_lr_weight", "up_lr_weight", "model_list", "lr_warmup", "max_resolution", "optimizer",
    "additional_parameters", "sdxl_cache_text_encoder_outputs", "sdxl_no_half_vae",
    "stop_text_encoder_training_pct", "num_cpu_threads_per_process", "gpu_ids", "multi_gpu",
    "num_machines", "num_processes", "main_process_port", "extra_accelerate_launch_args",
    "dynamo_mode", "dynamo_use_fullgraph", "dynamo_use_dynamic", "lora_network_weights",
    "flux1_checkbox", "loraplus_lr_ratio", "loraplus_unet_lr_ratio",
    "loraplus_text_encoder_lr_ratio", "flux1_cache_text_encoder_outputs",
    "flux1_cache_text_encoder_outputs_to_disk", "split_mode", "train_blocks", "lowvram",
    "save_as_bool",
}  # fmt: skip
_LYCORIS_ARGS = {
    "LyCORIS/LoCon": "preset conv_dim conv_alpha use_tucker rank_dropout bypass_mode dora_wd "
    "module_dropout use_scalar rank_dropout_scale algo=locon train_norm",
    "LyCORIS/LoHa": "preset conv_dim conv_alpha use_tucker rank_dropout bypass_mode dora_wd "
    "module_dropout use_scalar rank_dropout_scale algo=loha train_norm",
    "LyCORIS/LoKr": "preset conv_dim conv_alpha use_tucker rank_dropout bypass_mode dora_wd "
    "module_dropout factor use_cp use_scalar decompose_both rank_dropout_scale algo=lokr "
    "train_norm",
    "LyCORIS/iA3": "preset conv_dim conv_alpha train_on_input algo=ia3",
    "LyCORIS/GLoRA": "preset conv_dim conv_alpha use_tucker rank_dropout module_dropout "
    "rank_dropout_scale algo=glora train_norm",
}
_MODULES = {"Standard": "networks.lora", "Flux1": "networks.lora_flux"}


def _number(value: Any) -> Any:
    """The GUI's number fields come back as numbers (presets hold some as strings)."""
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(value)
            except ValueError:
                pass
    return value


def _network_args(preset: dict[str, Any]) -> list[str]:
    kind = preset.get("LoRA_type", "Standard")
    if kind in _LYCORIS_ARGS:
        names = {"preset": "LyCORIS_preset"}
        args = []
        for item in _LYCORIS_ARGS[kind].split():
            if "=" in item:
                args.append(item)
                continue
            value = preset.get(names.get(item, item))
            if value is not None:
                args.append(f"{item}={_number(value)}")
        return args
    args = []
    for key in ("rank_dropout", "module_dropout"):
        if _number(preset.get(key) or 0):
            args.append(f"{key}={preset[key]}")
    return args


def _extra(text: str) -> dict[str, Any]:
    """``--key value`` command-line extras as config keys."""
    values: dict[str, Any] = {}
    key = None
    for token in shlex.split(text or ""):
        if token.startswith("--"):
            name, _, inline = token[2:].partition("=")
            key = name
            values[key] = _number(inline) if inline else True
        elif key is not None:
            current = values[key]
            values[key] = _number(token) if current is True else [*_listed(current), token]
    return values


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def gui_to_config(preset: dict[str, Any], data: Path, model: Path, out: Path) -> dict[str, Any]:
    """The TOML dict the GUI would write for ``preset`` (paths, resolution, epochs ours)."""
    config = {k: _number(v) for k, v in preset.items() if k not in _GUI_ONLY}
    kind = preset.get("LoRA_type", "Standard")
    config["network_module"] = _MODULES.get(kind, "lycoris.kohya")
    config["network_args"] = _network_args(preset)
    config["optimizer_type"] = preset.get("optimizer", "AdamW")
    config["optimizer_args"] = str(preset.get("optimizer_args", "")).replace('"', "").split()
    config["lr_warmup_steps"] = _number(preset.get("lr_warmup") or 0) / 100
    te = _number(preset.get("text_encoder_lr") or 0)
    config.pop("text_encoder_lr", None)
    if te:
        config["text_encoder_lr"] = [float(te), float(te)]
    if not _number(preset.get("unet_lr") or 0):
        config.pop("unet_lr", None)
    original = preset.get("noise_offset_type", "Original") == "Original"
    for key in ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength"):
        if not original or not _number(preset.get(key) or 0):
            config.pop(key, None)
    for key in ("multires_noise_iterations", "multires_noise_discount"):
        if original or not _number(preset.get("multires_noise_iterations") or 0):
            config.pop(key, None)
    for key in ("min_snr_gamma", "max_timestep", "min_timestep", "seed", "clip_skip"):
        if not _number(config.get(key) or 0):
            config.pop(key, None)
    attention = preset.get("xformers")
    config.pop("xformers", None)
    if attention in (True, "xformers"):
        config["xformers"] = True
    elif attention == "sdpa":
        config["sdpa"] = True
    if preset.get("sdxl"):
        config["no_half_vae"] = bool(preset.get("sdxl_no_half_vae"))
        config["cache_text_encoder_outputs"] = bool(preset.get("sdxl_cache_text_encoder_outputs"))
    config.update(_extra(preset.get("additional_parameters", "")))
    config = {k: v for k, v in config.items() if v not in ("", None)}
    config.update(
        pretrained_model_name_or_path=str(model),
        train_data_dir=str(data),
        output_dir=str(out),
        output_name="preset",
        resolution="128,128",
        epoch=1,
        max_bucket_reso=256,
        min_bucket_reso=64,
    )
    for key in ("max_train_epochs", "max_train_steps", "sample_prompts", "logging_dir"):
        config.pop(key, None)
    return config


def run(folder: Path, *, train: bool) -> int:
    from lab.errors import LabError
    from lab.training.config import build_config

    presets = sorted(folder.glob("*.json"))
    accepted = trained = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = data = root / "none"
        if train:
            from trainer.tiny import build_tiny_sd15, build_tiny_sdxl

            sd15, sdxl = build_tiny_sd15(root / "sd15"), build_tiny_sdxl(root / "sdxl")
            data = _dataset(root / "data")
        print(f"| preset | loads unchanged | {'trains (tiny) |' if train else ''}")
        print(f"|---|---|{'---|' if train else ''}")
        for path in presets:
            preset = json.loads(path.read_text(encoding="utf-8"))
            if train:
                model = sdxl if preset.get("sdxl") else sd15
            values = gui_to_config(preset, data, model, root / "out" / path.stem)
            try:
                config = build_config(values)
            except LabError as error:
                print(f"| {path.stem} | refused: {error} |{' |' if train else ''}")
                continue
            accepted += 1
            outcome = ""
            if train:
                outcome = _train(config)
                trained += outcome == "yes"
            print(f"| {path.stem} | yes |{f' {outcome} |' if train else ''}")
    print(f"\naccepted unchanged: {accepted}/{len(presets)}")
    if train:
        print(f"trained on the tiny model: {trained}/{len(presets)}")
    return 0


def _dataset(root: Path) -> Path:
    """Four captioned images whose buckets exist at 128 px with every preset's bucket
    step (64) and ``bucket_no_upscale``: two square, two 3:2."""
    from trainer.tiny import make_image

    folder = root / "2_sks dog"
    folder.mkdir(parents=True)
    for index, size in enumerate([(128, 128), (192, 128), (128, 128), (192, 128)]):
        make_image(folder / f"img{index}.png", size, seed=index)
        (folder / f"img{index}.txt").write_text(f"sks dog, picture {index}", encoding="utf-8")
    return root


def _train(config: Any) -> str:
    from lab.errors import LabError
    from trainer.loop import train

    try:
        train(config.model_copy(update={"max_train_epochs": 1, "max_train_steps": 2}))
    except LabError as error:
        return f"refused: {error}"
    except Exception as error:
        return f"failed: {type(error).__name__}: {error}"
    return "yes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="kohya_ss presets/lora folder")
    parser.add_argument("--train", action="store_true", help="also train each on the tiny model")
    args = parser.parse_args(argv)
    return run(args.folder, train=args.train)


if __name__ == "__main__":
    sys.exit(main())

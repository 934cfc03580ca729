"""What kohya's keys mean here: the ones we honour under another shape, the ones that
change nothing, and the ones we accept only while they are off.

A kohya_ss GUI config (the TOML ``train_network.py --config_file`` reads) carries every
option of the GUI, most of them at their "off" value (``color_aug = false``,
``max_token_length = 75``, ``vae_batch_size = 0``…). sd-scripts reads such a file into
its argument namespace, so a key that is off asks for nothing: we accept it. A key that
asks for something we do not do is refused with what to use instead.

The names and defaults come from sd-scripts' argument definitions
(``library/train_util.py``, ``train_network.py``) and the GUI's TOML writer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lab.training.errors import ConfigError

logger = logging.getLogger(__name__)

# Keys that change nothing here, whatever their value; accepted with a log line.
NO_EFFECT_KEYS: Mapping[str, str] = {
    "sdpa": "PyTorch SDPA attention is always used",
    "xformers": "PyTorch SDPA attention is always used instead",
    "mem_eff_attn": "PyTorch SDPA attention is always used instead",
    "max_data_loader_n_workers": "images are read in the main process",
    "persistent_data_loader_workers": "images are read in the main process",
    "logging_dir": "progress goes to the callbacks and the log",
    "log_with": "progress goes to the callbacks and the log",
    "log_prefix": "progress goes to the callbacks and the log",
    "log_tracker_name": "progress goes to the callbacks and the log",
    "log_tracker_config": "progress goes to the callbacks and the log",
    "log_config": "progress goes to the callbacks and the log",
    "wandb_run_name": "progress goes to the callbacks and the log (no wandb)",
    "wandb_api_key": "progress goes to the callbacks and the log (no wandb)",
    "lowram": "weights are loaded once",
    "highvram": "weights are loaded once",
    "vae_batch_size": "the latent cache picks its own encoding batch",
    "text_encoder_batch_size": "the caption cache picks its own encoding batch",
    "no_half_vae": "the VAE always runs in float32 here",
    "sdxl": "an SDXL base is recognised from the model itself (text_encoder_2)",
    "async_upload": "nothing is uploaded",
    "skip_cache_check": "the latent cache checks its entries by content hash",
    "cache_info": "the latent cache keeps its own index",
    "tokenizer_cache_dir": "the tokenizer is read from the base model",
    "num_cpu_threads_per_process": "an accelerate launcher option",
    "ddp_timeout": "one process per run",
    "ddp_gradient_as_bucket_view": "one process per run",
    "ddp_static_graph": "one process per run",
    "metadata_title": "the LoRA's modelspec metadata is written by the lab",
    "metadata_author": "the LoRA's modelspec metadata is written by the lab",
    "metadata_description": "the LoRA's modelspec metadata is written by the lab",
    "metadata_license": "the LoRA's modelspec metadata is written by the lab",
    "metadata_tags": "the LoRA's modelspec metadata is written by the lab",
    "huggingface_repo_type": "nothing is uploaded",
    "huggingface_repo_visibility": "nothing is uploaded",
    "huggingface_path_in_repo": "nothing is uploaded",
    "huggingface_token": "nothing is uploaded",
}

# Keys accepted while they are off. Besides the values listed, an empty value (false,
# 0, "", [] — what kohya treats as unset) is off. The text says what to use instead.
OFF_ONLY_KEYS: Mapping[str, tuple[tuple[Any, ...], str]] = {
    "full_fp16": ((), "it needs mixed_precision = 'fp16' (LoRA weights stay fp32)"),
    "full_bf16": ((), "it needs mixed_precision = 'bf16' (LoRA weights stay fp32)"),
    "fp8_base": ((), "fp8 base weights are not supported; use mixed_precision"),
    "fp8_base_unet": ((), "fp8 base weights are not supported; use mixed_precision"),
    "color_aug": ((), "colour augmentation is not supported (the guides advise against it)"),
    "random_crop": ((), "images are centre-cropped to their bucket; use flip_aug to vary them"),
    "face_crop_aug_range": ((), "face-crop augmentation is not supported"),
    "caption_dropout_every_n_epochs": ((), "use caption_dropout_rate"),
    "caption_separator": ((",",), "captions are always split on ',' (lab.captions)"),
    "secondary_separator": ((), "use keep_tokens_separator"),
    "enable_wildcard": ((), "caption wildcards are not supported"),
    "weighted_captions": ((), "caption weighting ((tag:1.2)) is not supported"),
    "token_warmup_step": ((), "caption token warm-up is not supported; train on full captions"),
    "token_warmup_min": ((1,), "caption token warm-up is not supported; train on full captions"),
    "network_train_text_encoder_only": ((), "train both (text_encoder_lr) or set unet_lr"),
    "network_weights": ((), "use resume (a state directory) to continue a run"),
    "dim_from_weights": (
        (),
        "it reads network_dim from network_weights (not set here); set network_dim",
    ),
    "base_weights": ((), "merging LoRAs into the base before training is not supported"),
    "base_weights_multiplier": ((), "merging LoRAs into the base is not supported"),
    "vae": ((), "a separate VAE is not supported; the base model's VAE is used"),
    "save_last_n_steps_state": ((), "use save_last_n_epochs"),
    "save_last_n_epochs_state": ((), "use save_last_n_epochs"),
    "save_n_epoch_ratio": ((), "use save_every_n_epochs"),
    "sample_every_n_steps": ((), "use sample_every_n_epochs"),
    "sample_at_first": ((), "use sample_every_n_epochs"),
    "resume_from_huggingface": ((), "resume from a local state directory"),
    "save_state_to_huggingface": ((), "nothing is uploaded; save_state writes locally"),
    "huggingface_repo_id": ((), "nothing is uploaded"),
    "ip_noise_gamma": ((), "input-perturbation noise is not supported; use noise_offset"),
    "ip_noise_gamma_random_strength": ((), "input-perturbation noise is not supported"),
    "v_pred_like_loss": ((), "not supported; use min_snr_gamma"),
    "scale_v_pred_loss_like_noise_pred": ((), "not supported; use min_snr_gamma"),
    "masked_loss": ((), "masked loss is not supported"),
    "alpha_mask": ((), "alpha masks are not supported (transparency becomes white)"),
    "debug_dataset": ((), "use `loralab dataset check`"),
    "dynamo_backend": (("no", "inductor"), "use torch_compile = true"),
    "lr_scheduler_timescale": ((), "only used by custom schedules; use lr_scheduler"),
    "lr_scheduler_min_lr_ratio": ((), "not supported; use lr_scheduler = 'cosine'"),
    "lr_decay_steps": ((), "not supported; use lr_scheduler"),
    "train_inpainting": ((), "inpainting models are not supported"),
    "deepspeed": ((), "one process per run; DeepSpeed is not supported"),
    "zero_stage": ((2,), "one process per run; DeepSpeed is not supported"),
    "blocks_to_swap": ((), "block swapping is not supported; use gradient_checkpointing"),
    "cpu_offload_checkpointing": ((), "use gradient_checkpointing"),
    "fused_backward_pass": ((), "not supported; use optimizer_type = 'Adafactor'"),
    "validation_split": ((), "validation runs are not supported"),
    "validate_every_n_epochs": ((), "validation runs are not supported"),
    "validate_every_n_steps": ((), "validation runs are not supported"),
    "max_validation_steps": ((), "validation runs are not supported"),
    "validation_seed": ((), "validation runs are not supported"),
    "initial_epoch": ((), "use resume (a state directory) to continue a run"),
    "initial_step": ((), "use resume (a state directory) to continue a run"),
    "skip_until_initial_step": ((), "use resume (a state directory) to continue a run"),
    "conditioning_data_dir": ((), "ControlNet-style data is not supported"),
    "in_json": ((), "use metadata-free folders or [[datasets.subsets]] (image_dir)"),
    "dataset_class": ((), "custom dataset classes are not supported"),
    "dataset_repeats": ((1,), "use the N_ prefix of the folder or num_repeats"),
    "use_8bit_adam": ((), "use optimizer_type = 'AdamW8bit'"),
    "use_lion_optimizer": ((), "use optimizer_type = 'Lion'"),
    "use_safetensors": ((), "LoRAs are always saved as safetensors"),
    "resize_interpolation": ((), "images are resized with BOX (down) and LANCZOS (up)"),
    "disable_mmap_load_safetensors": ((), "weights are loaded once"),
    "no_metadata": ((), "the metadata is always written (the lab reads it)"),
    "output_config": ((), "configs are not written back"),
    "weighting_scheme": (("uniform", "none"), "a flow-matching option; SD1.5/SDXL only here"),
    "mode_scale": ((1.29,), "a flow-matching option; SD1.5/SDXL only here"),
    "logit_mean": ((0.0,), "a flow-matching option; SD1.5/SDXL only here"),
    "logit_std": ((1.0,), "a flow-matching option; SD1.5/SDXL only here"),
    "stop_text_encoder_training": ((), "use network_train_unet_only or text_encoder_lr = 0"),
    "no_token_padding": ((), "captions are always padded to one CLIP window"),
    "save_as_bool": ((), "use save_model_as = 'safetensors'"),
    "train_t5xxl": ((), "FLUX is not supported"),
}

# Options of other model families (FLUX, SD3, …) that the kohya_ss GUI may write.
OTHER_FAMILY_KEYS = frozenset(
    {
        "ae", "apply_t5_attn_mask", "clip_l", "clip_g", "t5xxl", "t5xxl_max_token_length",
        "discrete_flow_shift", "guidance_scale", "mem_eff_save", "model_prediction_type",
        "timestep_sampling", "sigmoid_scale", "split_mode", "clip_l_dropout_rate",
        "clip_g_dropout_rate", "t5_dropout_rate", "t5xxl_device", "t5xxl_dtype",
        "enable_scaled_pos_embed", "pos_emb_random_crop_rate", "save_clip", "save_t5xxl",
        "single_blocks_to_swap", "double_blocks_to_swap", "model_type", "train_blocks",
        "split_qkv",
    }
)  # fmt: skip

# sd-scripts' defaults where they are not "unset": an explicit default is never refused.
_KOHYA_DEFAULT_SCALARS = {"zero_stage": 2, "token_warmup_min": 1, "dataset_repeats": 1}


def is_off(value: Any) -> bool:
    """kohya's truthiness: false, 0, "", None and [] all mean "not asked for"."""
    if isinstance(value, str):
        return value.strip() == "" or value.strip().lower() in ("false", "0", "none")
    return value is None or value is False or value == 0 or value == [] or value == ()


def translate_kohya_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    """The GUI's keys in the shape the config model reads: ``epoch`` becomes
    ``max_train_epochs`` when no length is set, ``noise_offset_type`` picks which of
    the noise options applies, empty strings are unset, ``resume = false`` is no resume."""
    flat = dict(values)
    epoch = flat.pop("epoch", None)
    lengths = (flat.get("max_train_epochs"), flat.get("max_train_steps"))
    if not is_off(epoch) and all(is_off(v) for v in lengths):
        # The GUI turns `epoch` into max_train_steps itself; epochs are the same length.
        flat["max_train_epochs"] = epoch
    for key, precision in (("full_bf16", "bf16"), ("full_fp16", "fp16")):
        if not is_off(flat.get(key)) and flat.get("mixed_precision") == precision:
            # Asks for bf16/fp16 compute, which mixed_precision gives; the LoRA weights
            # stay float32 here (kohya would keep them in half precision too).
            logger.info("%s: training in %s with float32 LoRA weights", key, precision)
            flat.pop(key)
    steps = _number_or_none(flat.get("bucket_reso_steps"))
    if steps is not None and steps > 0 and steps % 8:
        # kohya only warns; latents are 1/8 of the image, so buckets step by 8 here.
        rounded = int(-(-steps // 8) * 8)
        logger.warning("bucket_reso_steps %s is not a multiple of 8: using %d", steps, rounded)
        flat["bucket_reso_steps"] = rounded
    # Options of an option that is off ask for nothing (kohya reads them only with it).
    for key, parent in (
        ("save_last_n_steps", "save_every_n_steps"),
        ("save_last_n_steps_state", "save_every_n_steps"),
        ("save_last_n_epochs_state", "save_state"),
    ):
        if key in flat and is_off(flat.get(parent)):
            logger.info("%s has no effect without %s", key, parent)
            flat.pop(key)
    kind = flat.pop("noise_offset_type", None)
    if kind is not None:
        _apply_noise_offset_type(flat, str(kind))
    for key in (
        "resume",
        "seed",
        "max_train_epochs",
        "max_train_steps",
        "lr_scheduler_num_cycles",
        "lr_scheduler_power",
        "max_timestep",
        "min_timestep",
        "clip_skip",
    ):
        if key in flat and (flat[key] is False or flat[key] == ""):
            flat.pop(key)
    for key in (
        "adaptive_noise_scale",
        "scale_weight_norms",
        "noise_offset",
        "min_snr_gamma",
        "multires_noise_iterations",
        "network_dropout",
        "sample_every_n_epochs",
        "save_every_n_epochs",
        "save_every_n_steps",
        "save_last_n_steps",
        "save_last_n_epochs",
    ):
        if key in flat and is_off(flat[key]):
            flat.pop(key)  # kohya: 0 means off for these
    for key in ("text_encoder_lr", "optimizer_args", "network_args", "lr_scheduler_args"):
        if flat.get(key) == "":
            flat.pop(key)
    return flat


def _number_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _apply_noise_offset_type(flat: dict[str, Any], kind: str) -> None:
    """The GUI's ``noise_offset_type``: ``Original`` uses noise_offset (and its adaptive and
    random-strength options), ``Multires`` the multi-resolution noise; the other's keys
    are dropped, as the GUI does before it calls sd-scripts."""
    original = ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength")
    multires = ("multires_noise_iterations", "multires_noise_discount")
    if kind.lower() == "original":
        dropped = multires
    elif kind.lower() == "multires":
        dropped = original
    else:
        raise ConfigError(
            f"noise_offset_type = {kind!r}: expected 'Original' (noise_offset) or 'Multires' "
            "(multires_noise_iterations)"
        )
    for key in dropped:
        if key in flat and not is_off(flat[key]) and key != "multires_noise_discount":
            logger.info("noise_offset_type = %s: %s is not used", kind, key)
        flat.pop(key, None)


def check_off_only(key: str, value: Any) -> str | None:
    """None when ``value`` of an off-only kohya key asks for nothing, else the problem."""
    accepted, reason = OFF_ONLY_KEYS[key]
    if is_off(value) or value in accepted or _same_number(value, accepted):
        return None
    if key in _KOHYA_DEFAULT_SCALARS and value == _KOHYA_DEFAULT_SCALARS[key]:
        return None
    return f"{key} = {value!r} is not supported: {reason}"


def _same_number(value: Any, accepted: tuple[Any, ...]) -> bool:
    """The GUI writes numbers as strings too (``max_token_length = "75"``)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return any(isinstance(a, int | float) and float(a) == number for a in accepted)


# The defaults that change what a run learns, shown when a config leaves them out.
SHOWN_DEFAULTS = (
    "network_dim",
    "network_alpha",
    "learning_rate",
    "unet_lr",
    "text_encoder_lr",
    "train_batch_size",
    "max_train_steps",
    "resolution",
    "enable_bucket",
    "caption_extension",
    "optimizer_type",
    "lr_scheduler",
    "mixed_precision",
    "loss_type",
)


def source_lines(values: Mapping[str, Any], sources: Mapping[str, str]) -> list[str]:
    """The first lines of a run: which keys came from the file, a preset or the command
    line, and the kohya defaults that apply to what was left out."""
    by_source: dict[str, list[str]] = {}
    for key, source in sources.items():
        by_source.setdefault(source, []).append(key)
    lines = [
        f"from {source}: {', '.join(sorted(keys))}" for source, keys in sorted(by_source.items())
    ]
    missing = [key for key in SHOWN_DEFAULTS if key not in sources]
    if "max_train_epochs" in sources and "max_train_steps" in missing:
        missing.remove("max_train_steps")  # epochs win; the step default does not apply
    if missing:
        shown = ", ".join(f"{key}={_show(values.get(key))}" for key in missing)
        lines.append(f"kohya defaults (not set): {shown}")
    return lines


def _show(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]},{value[1]}"
    return "none" if value is None else str(value)

"""Config keys we don't take, and what to tell the user about each.

A misspelt or foreign key must be an error naming it: silently ignoring
``learning_rte`` costs a night of GPU time. Where we know the right key, the error
says it; a few kohya keys that change nothing here are accepted with a log line so
that existing kohya configs load.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from typing import Any

from lab.training.errors import ConfigError

logger = logging.getLogger(__name__)

# Keys people carry over from other trainers or older kohya versions: what to use instead.
RENAMED_KEYS: Mapping[str, str] = {
    "epochs": "max_train_epochs",
    "num_epochs": "max_train_epochs",
    "max_epochs": "max_train_epochs",
    "steps": "max_train_steps",
    "batch_size": "train_batch_size",
    "lr": "learning_rate",
    "rank": "network_dim",
    "lora_rank": "network_dim",
    "alpha": "network_alpha",
    "lora_alpha": "network_alpha",
    "dropout": "network_dropout",
    "optimizer": "optimizer_type",
    "scheduler": "lr_scheduler",
    "warmup_steps": "lr_warmup_steps",
    "pretrained_model": "pretrained_model_name_or_path",
    "model": "pretrained_model_name_or_path",
    "snr_gamma": "min_snr_gamma",
    "dataset_config": "[[datasets]] in this file",
    "network_weights": "resume (a state directory) to continue a run",
}

# Kohya keys we know but have not built; naming them avoids a misleading "did you mean".
UNSUPPORTED_KEYS: Mapping[str, str] = {
    "sdxl": "not needed: an SDXL base is recognised from the model itself (text_encoder_2)",
    "full_fp16": "use mixed_precision = 'fp16' (LoRA weights stay fp32)",
    "full_bf16": "use mixed_precision = 'bf16' (LoRA weights stay fp32)",
    "color_aug": "colour augmentation is not supported (the guides advise against it)",
    "random_crop": "random_crop is not supported; images are centre-cropped to the bucket",
    "max_token_length": "only 75 tokens (one CLIP window) are supported",
    "caption_dropout_every_n_epochs": "use caption_dropout_rate",
    "network_train_text_encoder_only": "not supported; use network_train_unet_only = false",
    "scale_weight_norms": "not supported yet",
    "save_every_n_steps": "use save_every_n_epochs",
    "caption_separator": "captions are always split on ',' (lab.captions)",
}

# Keys that change nothing here; accepted so that kohya configs load, with a log line.
IGNORED_KEYS: Mapping[str, str] = {
    "sdpa": "PyTorch SDPA attention is always used",
    "xformers": "PyTorch SDPA attention is always used instead",
    "mem_eff_attn": "PyTorch SDPA attention is always used instead",
    "max_data_loader_n_workers": "images are read in the main process",
    "persistent_data_loader_workers": "images are read in the main process",
    "logging_dir": "progress goes to the callbacks and the log",
    "log_with": "progress goes to the callbacks and the log",
    "log_prefix": "progress goes to the callbacks and the log",
    "lowram": "weights are loaded once",
}


def check_keys(values: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """The values whose key is in ``known``; harmless kohya keys are dropped (logged);
    any other key raises :class:`ConfigError` naming it, with what to use instead."""
    kept: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in values.items():
        if key in known:
            kept[key] = value
        elif key == "save_model_as":
            if value != "safetensors":
                problems.append(f"save_model_as = {value!r}: LoRAs are saved as safetensors only")
        elif key in IGNORED_KEYS:
            logger.info("config key %r has no effect here: %s", key, IGNORED_KEYS[key])
        elif key in RENAMED_KEYS:
            problems.append(f"unknown key {key!r}: use {RENAMED_KEYS[key]} instead")
        elif key in UNSUPPORTED_KEYS:
            problems.append(f"unsupported key {key!r}: {UNSUPPORTED_KEYS[key]}")
        else:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
            hint = f": use {close[0]} instead" if close else ""
            problems.append(f"unknown key {key!r}{hint}")
    if problems:
        raise ConfigError("; ".join(problems))
    return kept

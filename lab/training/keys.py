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
from lab.training.kohya import NO_EFFECT_KEYS, OFF_ONLY_KEYS, OTHER_FAMILY_KEYS, check_off_only

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
}

# Kohya keys we know but have not built and that have no "off" value to accept.
UNSUPPORTED_KEYS: Mapping[str, str] = {
    "caption_extention": "use caption_extension (kohya's old misspelling)",
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
            if value not in ("safetensors", "", None):
                problems.append(f"save_model_as = {value!r}: LoRAs are saved as safetensors only")
        elif key in NO_EFFECT_KEYS:
            logger.info("config key %r has no effect here: %s", key, NO_EFFECT_KEYS[key])
        elif key in OFF_ONLY_KEYS:
            problem = check_off_only(key, value)
            if problem:
                problems.append(problem)
        elif key in OTHER_FAMILY_KEYS and key not in OFF_ONLY_KEYS:
            problems.append(
                f"{key!r} is an option for FLUX/SD3 bases; this trainer trains SD1.5 and SDXL"
            )
        elif key in RENAMED_KEYS:
            problems.append(f"unknown key {key!r}: use {RENAMED_KEYS[key]} instead")
        elif key in UNSUPPORTED_KEYS:
            problems.append(f"unsupported key {key!r}: {UNSUPPORTED_KEYS[key]}")
        else:
            # A hint only for a likely misspelling: never point a real kohya key at
            # another one (lr_scheduler_type is not lr_scheduler_power).
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
            hint = f": use {close[0]} instead" if close else ""
            problems.append(f"unknown key {key!r}{hint}")
    if problems:
        raise ConfigError("; ".join(problems))
    return kept

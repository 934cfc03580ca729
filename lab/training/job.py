"""A lab job's training configuration: a preset plus the overrides a trainer set with
`/train config`, checked against the same model the trainer runs (`TrainConfig`).

The worker owns the paths and outputs of a run; a few keys belong to the lab, not to
the trainer (`num_repeats` for the dataset export, `suggested_weight` for the release).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lab.training.allowed import TrainingLimits, check_trainer_keys
from lab.training.config import TrainConfig, build_config
from lab.training.errors import ConfigError

# Set by the worker for every run; a trainer may not override them from Discord.
WORKER_OWNED = frozenset(
    {
        "pretrained_model_name_or_path",
        "train_data_dir",
        "reg_data_dir",
        "datasets",
        "dataset_config",  # a path the worker would read
        "output_dir",
        "output_name",
        "resume",
        "sample_prompts",
        "save_state",
        "save_state_on_train_end",
        "allow_unsafe_checkpoint",
        "single_file_config",
        # Where the worker writes, and the check that protects its GPU: never a member's.
        "latent_cache_dir",
        "memory_budget_gb",
        "caption_extension",
        "config_version",
    }
)

# Keys of the lab itself, with their check.
LAB_KEYS: dict[str, tuple[type, float, float]] = {
    "num_repeats": (int, 1, 1000),
    "suggested_weight": (float, 0.05, 2.0),
}

_PLACEHOLDERS = {
    "pretrained_model_name_or_path": "base",
    "train_data_dir": "data",
    "output_dir": "out",
}


def split_job_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer overrides, lab values) of a stored job configuration."""
    trainer = {k: v for k, v in config.items() if k not in LAB_KEYS and k != "preset"}
    lab = {k: v for k, v in config.items() if k in LAB_KEYS}
    return trainer, lab


def check_job_config(
    preset: str | None, config: Mapping[str, Any], limits: TrainingLimits | None = None
) -> TrainConfig:
    """Validate a job's preset and overrides as the trainer will see them, and (with
    ``limits``) against what a trainer may set from Discord; raises `ConfigError`
    naming the first problem."""
    owned = sorted(set(config) & WORKER_OWNED)
    if owned:
        raise ConfigError(f"{', '.join(owned)} is set by the worker for every run; leave it out.")
    trainer, lab = split_job_config(config)
    for key, value in lab.items():
        kind, low, high = LAB_KEYS[key]
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, not {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"{key} must be between {low:g} and {high:g}")
    built = build_config(_PLACEHOLDERS, preset=preset, overrides=trainer)
    if limits is not None:
        check_trainer_keys(trainer, built, limits)
    return built

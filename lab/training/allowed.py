"""What a trainer may set with `/train config`: an allow-list of keys, each with bounds.

A job's config is chosen by a member and run on the lab's GPU, so "valid for the
trainer" is not enough: ``resolution=16384``, ``max_train_epochs=100000000`` or
``train_batch_size=100000`` are valid kohya values that hold a GPU for days or exhaust
its memory. Every key a trainer may set is listed here; sizes, counts and lengths are
bounded by the lab's :class:`TrainingLimits` (``[rules.training]`` in the lab's TOML).
Paths, the memory budget and everything else about where and how a run executes belong
to the worker (:data:`lab.training.job.WORKER_OWNED`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field

from lab.training.config import TrainConfig
from lab.training.errors import ConfigError

__all__ = ["FREE_KEYS", "TrainingLimits", "check_trainer_keys"]


class TrainingLimits(BaseModel):
    """Upper bounds of what one job may ask of a GPU (a Lab Admin's to raise)."""

    model_config = {"frozen": True, "extra": "forbid"}

    max_resolution: int = Field(1536, ge=256, description="Largest training side, in px.")
    max_train_epochs: int = Field(100, ge=1)
    max_train_steps: int = Field(20_000, ge=1)
    max_network_dim: int = Field(256, ge=1, description="Largest network_dim / conv_dim.")
    max_batch_size: int = Field(16, ge=1)
    max_gradient_accumulation_steps: int = Field(64, ge=1)


# Keys whose every valid value is harmless: choices, flags, rates, loss options.
FREE_KEYS = frozenset(
    {
        "v2", "v_parameterization", "prediction_type", "enable_bucket", "bucket_no_upscale",
        "shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate", "flip_aug",
        "prior_loss_weight", "cache_latents", "cache_latents_to_disk",
        "cache_text_encoder_outputs", "network_module", "network_dropout",
        "network_train_unet_only", "learning_rate", "unet_lr", "text_encoder_lr",
        "optimizer_type", "lr_scheduler", "lr_scheduler_power", "max_grad_norm",
        "mixed_precision", "save_precision", "gradient_checkpointing", "torch_compile",
        "seed", "min_snr_gamma", "debiased_estimation_loss", "noise_offset",
        "noise_offset_random_strength", "multires_noise_discount", "zero_terminal_snr",
        "save_every_n_epochs", "save_last_n_epochs", "sample_every_n_epochs",
        "sample_sampler", "save_model_as",
    }
)  # fmt: skip


def _at_most(limit: Callable[[TrainingLimits], int], what: str) -> Callable[..., str | None]:
    def check(value: Any, limits: TrainingLimits) -> str | None:
        top = limit(limits)
        if value is not None and value > top:
            return f"{what} {value} is over this lab's limit of {top}"
        return None

    return check


def _resolution(value: tuple[int, int], limits: TrainingLimits) -> str | None:
    if max(value) > limits.max_resolution:
        return (
            f"resolution {value[0]}×{value[1]} is over this lab's limit of "
            f"{limits.max_resolution} px per side"
        )
    return None


def _text(length: int) -> Callable[..., str | None]:
    def check(value: Any, limits: TrainingLimits) -> str | None:
        if value is not None and len(str(value)) > length:
            return f"that text is longer than {length} characters"
        return None

    return check


def _items(
    count: int, each: Callable[[Any, TrainingLimits], str | None] | None = None
) -> Callable[..., str | None]:
    def check(value: tuple[Any, ...], limits: TrainingLimits) -> str | None:
        if len(value) > count:
            return f"at most {count} entries"
        for item in value:
            problem = each(item, limits) if each else None
            if problem:
                return problem
        return None

    return check


def _network_arg(item: str, limits: TrainingLimits) -> str | None:
    key, _, raw = str(item).partition("=")
    if key.strip() in ("conv_dim", "conv_alpha"):
        try:
            number = float(raw)
        except ValueError:
            return f"{key.strip()} must be a number"
        if number > limits.max_network_dim:
            return f"{key.strip()} {number:g} is over this lab's limit of {limits.max_network_dim}"
    return None


def _weight(item: float, limits: TrainingLimits) -> str | None:
    return None if -2 <= item <= 2 else f"sample weight {item:g} is outside -2..2"


_BOUNDED: Mapping[str, Callable[[Any, TrainingLimits], str | None]] = {
    "resolution": _resolution,
    "min_bucket_reso": _at_most(lambda lim: lim.max_resolution, "min_bucket_reso"),
    "max_bucket_reso": _at_most(lambda lim: 2 * lim.max_resolution, "max_bucket_reso"),
    "bucket_reso_steps": _at_most(lambda lim: 256, "bucket_reso_steps"),
    "max_train_epochs": _at_most(lambda lim: lim.max_train_epochs, "max_train_epochs"),
    "max_train_steps": _at_most(lambda lim: lim.max_train_steps, "max_train_steps"),
    "lr_warmup_steps": _at_most(lambda lim: lim.max_train_steps, "lr_warmup_steps"),
    "lr_scheduler_num_cycles": _at_most(lambda lim: 100, "lr_scheduler_num_cycles"),
    "network_dim": _at_most(lambda lim: lim.max_network_dim, "network_dim"),
    "network_alpha": _at_most(lambda lim: lim.max_network_dim, "network_alpha"),
    "network_args": _items(16, _network_arg),
    "optimizer_args": _items(16),
    "train_batch_size": _at_most(lambda lim: lim.max_batch_size, "train_batch_size"),
    "gradient_accumulation_steps": _at_most(
        lambda lim: lim.max_gradient_accumulation_steps, "gradient_accumulation_steps"
    ),
    "multires_noise_iterations": _at_most(lambda lim: 20, "multires_noise_iterations"),
    "clip_skip": _at_most(lambda lim: 12, "clip_skip"),
    "keep_tokens": _at_most(lambda lim: 32, "keep_tokens"),
    "keep_tokens_separator": _text(8),
    "caption_prefix": _text(200),
    "caption_suffix": _text(200),
    "training_comment": _text(500),
    "sample_weights": _items(8, _weight),
}

SETTABLE = FREE_KEYS | frozenset(_BOUNDED)
"""Every key a trainer may set from Discord."""


def check_trainer_keys(
    overrides: Mapping[str, Any], config: TrainConfig, limits: TrainingLimits
) -> None:
    """Raise :class:`ConfigError` for an override that is not on the allow-list, or whose
    value in the built ``config`` is over the lab's bounds (the first problem, named)."""
    refused = sorted(key for key in overrides if key not in SETTABLE)
    if refused:
        raise ConfigError(
            f"{', '.join(refused)} cannot be set from Discord; the lab or the worker sets it."
        )
    for key in overrides:
        check = _BOUNDED.get(key)
        problem = check(getattr(config, key), limits) if check else None
        if problem:
            raise ConfigError(f"{key}: {problem} (a Lab Admin sets the limits)")

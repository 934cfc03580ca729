"""The noise of one training batch: the configured offset and pyramid noise, and
kohya's ``adaptive_noise_scale``, whose offset follows the batch's latents."""

from __future__ import annotations

import torch

from lab.training.config import TrainConfig
from trainer.kohya_terms import adaptive_offset_noise
from trainer.loss import training_noise


def adaptive_training_noise(
    latents: torch.Tensor, config: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """``training_noise``; with ``adaptive_noise_scale`` the offset is drawn from the
    latents by :func:`~trainer.kohya_terms.adaptive_offset_noise` instead."""
    if not config.adaptive_noise_scale or not config.noise_offset:
        return training_noise(latents.shape, config, generator)
    plain = training_noise(
        latents.shape, config.model_copy(update={"noise_offset": None}), generator
    )
    return adaptive_offset_noise(
        plain,
        latents,
        config.noise_offset,
        config.adaptive_noise_scale,
        random_strength=config.noise_offset_random_strength,
        generator=generator,
    )

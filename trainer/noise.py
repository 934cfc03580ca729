"""The noise of one training batch: the configured offset and pyramid noise, and
kohya's ``adaptive_noise_scale``, whose offset follows the batch's latents."""

from __future__ import annotations

import dataclasses

import torch

from trainer.kohya_terms import adaptive_offset_noise
from trainer.loss import NoiseOptions, training_noise


def adaptive_training_noise(
    latents: torch.Tensor, options: NoiseOptions, generator: torch.Generator
) -> torch.Tensor:
    """``training_noise``; with ``options.adaptive_scale`` the offset is drawn from the
    latents by :func:`~trainer.kohya_terms.adaptive_offset_noise` instead."""
    if not options.adaptive_scale or not options.offset:
        return training_noise(latents.shape, options, generator)
    plain = training_noise(latents.shape, dataclasses.replace(options, offset=None), generator)
    return adaptive_offset_noise(
        plain,
        latents,
        options.offset,
        options.adaptive_scale,
        random_strength=options.offset_random_strength,
        generator=generator,
    )

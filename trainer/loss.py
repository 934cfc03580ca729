"""The diffusion loss and its noise tricks: small tensor-in/tensor-out helpers.

Each helper cites where it comes from; the arithmetic follows diffusers'
``training_utils`` and kohya's ``custom_train_functions`` so that a run here learns
what the same options learn there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr


def offset_noise(
    noise: torch.Tensor,
    strength: float,
    *,
    random_strength: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Add a per-channel constant to the noise so the model can learn overall brightness.

    Nicholas Guttenberg, "Diffusion With Offset Noise" (crosslabs.org, 2023). With
    ``random_strength`` the offset is scaled by U(0, 1) per sample (kohya's
    ``noise_offset_random_strength``).
    """
    batch, channels = noise.shape[:2]
    shape = (batch, channels, 1, 1)
    offset = torch.randn(shape, generator=generator, device=noise.device, dtype=noise.dtype)
    if random_strength:
        scale = torch.rand((batch, 1, 1, 1), generator=generator, device=noise.device)
        offset = offset * scale.to(noise.dtype)
    return noise + strength * offset


def pyramid_noise(
    noise: torch.Tensor,
    iterations: int,
    discount: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Multi-resolution ("pyramid") noise: upsampled low-res noise added at falling weight.

    Jonathan Whitaker, "Multi-Resolution Noise for Diffusion Model Training" (2023); the
    random 2–4× scale per level and the final renormalisation follow kohya.
    """
    batch, channels, height, width = noise.shape
    upsample = torch.nn.Upsample(size=(height, width), mode="bilinear")
    result = noise.clone()
    for level in range(iterations):
        factor = torch.rand(1, generator=generator).item() * 2 + 2
        low_h, low_w = max(1, int(height / factor**level)), max(1, int(width / factor**level))
        low = torch.randn((batch, channels, low_h, low_w), generator=generator, device=noise.device)
        result = result + upsample(low).to(noise.dtype) * discount**level
        if low_h == 1 or low_w == 1:
            break
    return result / result.std()


def target_for(
    scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet should predict: the noise (ε) or the velocity (v).

    v-prediction: Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion
    Models" (2022), v = α_t·ε − σ_t·x₀.
    """
    if scheduler.config.prediction_type == "epsilon":
        return noise
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")


def min_snr_weights(
    scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Per-sample loss weights min(SNR, γ)/SNR (ε) or min(SNR, γ)/(SNR+1) (v).

    Hang et al., "Efficient Diffusion Training via Min-SNR Weighting Strategy" (2023),
    section 3.4; the v-prediction form divides by SNR + 1 as diffusers does.
    """
    snr = compute_snr(scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr


def debiased_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Per-sample weights 1/√SNR, capped at 1000 (kohya's ``apply_debiased_estimation``).

    Yu et al., "Debias the Training of Diffusion Models" (2024).
    """
    snr = torch.clamp(compute_snr(scheduler, timesteps), max=1000)
    return 1 / torch.sqrt(snr)


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean squared error of each sample, in float32 (reduced over C, H, W)."""
    error = torch.nn.functional.mse_loss(prediction.float(), target.float(), reduction="none")
    return error.mean(dim=list(range(1, error.ndim)))


@dataclass(frozen=True)
class NoiseOptions:
    """kohya's noise options: ``noise_offset`` (+ ``noise_offset_random_strength``) and
    ``multires_noise_iterations`` / ``multires_noise_discount``; unset means off."""

    offset: float | None = None
    offset_random_strength: bool = False
    multires_iterations: int | None = None
    multires_discount: float = 0.3
    adaptive_scale: float | None = None
    """kohya's ``adaptive_noise_scale``: the offset follows the batch's latents
    (:func:`trainer.noise.adaptive_training_noise`)."""


def training_noise(
    shape: torch.Size, options: NoiseOptions, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian noise, plus :func:`offset_noise` and :func:`pyramid_noise` as ``options`` ask."""
    noise = torch.randn(shape, generator=generator)
    if options.offset:
        noise = offset_noise(
            noise,
            options.offset,
            random_strength=options.offset_random_strength,
            generator=generator,
        )
    if options.multires_iterations:
        noise = pyramid_noise(
            noise,
            options.multires_iterations,
            options.multires_discount,
            generator=generator,
        )
    return noise

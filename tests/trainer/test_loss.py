"""Loss helpers against their papers' formulas."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from trainer.loss import (
    debiased_weights,
    min_snr_weights,
    offset_noise,
    per_sample_mse,
    pyramid_noise,
    target_for,
)


def _scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
    )


def _snr(scheduler: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    alpha_bar = scheduler.alphas_cumprod[t]
    return alpha_bar / (1 - alpha_bar)


def test_min_snr_weights_follow_hang_et_al() -> None:
    scheduler = _scheduler()
    t = torch.tensor([0, 10, 200, 999])
    snr = _snr(scheduler, t)
    weights = min_snr_weights(scheduler, t, gamma=5.0)
    torch.testing.assert_close(weights, torch.clamp(snr, max=5.0) / snr)
    assert weights[0] < 1 and weights[-1] == 1  # low noise down-weighted, high noise kept
    v_weights = min_snr_weights(_scheduler("v_prediction"), t, gamma=5.0)
    torch.testing.assert_close(v_weights, torch.clamp(snr, max=5.0) / (snr + 1))


def test_debiased_weights_are_inverse_sqrt_snr() -> None:
    scheduler = _scheduler()
    t = torch.tensor([5, 500, 990])
    torch.testing.assert_close(
        debiased_weights(scheduler, t), 1 / torch.sqrt(torch.clamp(_snr(scheduler, t), max=1000))
    )


def test_v_prediction_target() -> None:
    scheduler = _scheduler("v_prediction")
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 800])
    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    torch.testing.assert_close(target_for(scheduler, latents, noise, t), expected)
    assert target_for(_scheduler(), latents, noise, t) is noise


def test_offset_noise_shifts_whole_channels() -> None:
    noise = torch.zeros(3, 4, 8, 8)
    shifted = offset_noise(noise, 0.1, generator=torch.Generator().manual_seed(0))
    per_channel = shifted.flatten(2)
    assert torch.allclose(per_channel, per_channel[..., :1].expand_as(per_channel))
    assert shifted.abs().sum() > 0


def test_pyramid_noise_is_normalised() -> None:
    noise = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    result = pyramid_noise(noise, 6, 0.3, generator=torch.Generator().manual_seed(1))
    assert result.shape == noise.shape
    assert abs(result.std().item() - 1.0) < 1e-4


def test_per_sample_mse() -> None:
    a = torch.zeros(2, 1, 2, 2)
    b = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), 2.0)])
    torch.testing.assert_close(per_sample_mse(a, b), torch.tensor([0.0, 4.0]))

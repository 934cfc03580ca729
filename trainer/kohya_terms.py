"""sd-scripts' loss options as small tensor-in/tensor-out helpers with explicit values.

``loss_type`` (L1, L2, Huber, smooth L1) with its timestep-dependent Huber threshold,
the ``min_timestep``/``max_timestep`` range, ``adaptive_noise_scale`` and
``scale_weight_norms`` (max-norm regularisation). Each follows sd-scripts
(``library/train_util.py``, ``library/custom_train_functions.py``, ``networks/lora.py``)
so that an option means here what it means there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

# The config keys :func:`kohya_loss` takes, by name.
LOSS_OPTIONS = frozenset({"loss_type", "huber_schedule", "huber_c", "huber_scale"})


def sample_timesteps(
    batch: int, low: int, high: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Timesteps drawn uniformly from ``[low, high)``; sd-scripts' ``get_timesteps``
    (``min_timestep``/``max_timestep``, default 0 and the scheduler's 1000)."""
    if low >= high:
        return torch.full((batch,), high, dtype=torch.long)
    return torch.randint(low, high, (batch,), generator=generator)


def huber_thresholds(
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    *,
    schedule: str,
    huber_c: float,
    huber_scale: float,
    num_train_timesteps: int,
) -> torch.Tensor:
    """The per-sample Huber threshold δ(t) of sd-scripts' ``get_huber_threshold_if_needed``.

    Khrapov et al., "Improving Diffusion Models's Data-Corruption Resistance using
    Scheduled Pseudo-Huber Loss" (arXiv:2403.16728, 2024). ``exponential``:
    δ = scale·exp(ln(c)·t/T); ``snr``: δ = (1 − c)/(1 + σ_t)² + c with
    σ_t = √((1 − ᾱ_t)/ᾱ_t); ``constant``: δ = c·scale.
    """
    steps = timesteps.cpu()
    if schedule == "exponential":
        alpha = -math.log(huber_c) / num_train_timesteps
        return torch.exp(-alpha * steps.float()) * huber_scale
    if schedule == "snr":
        alphas = torch.index_select(alphas_cumprod.cpu(), 0, steps)
        sigmas = ((1.0 - alphas) / alphas) ** 0.5
        return (1 - huber_c) / (1 + sigmas) ** 2 + huber_c
    if schedule == "constant":
        return torch.full((len(steps),), huber_c * huber_scale)
    raise ValueError(f"unknown huber_schedule {schedule!r}")


def per_sample_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    loss_type: str,
    thresholds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each sample's loss, in float32, reduced over C, H, W: sd-scripts'
    ``conditional_loss`` (``l2``, ``l1``, ``huber``: 2δ(√(x² + δ²) − δ), ``smooth_l1``:
    2(√(x² + δ²) − δ)), with δ from :func:`huber_thresholds`."""
    difference = prediction.float() - target.float()
    if loss_type == "l2":
        error = difference**2
    elif loss_type == "l1":
        error = difference.abs()
    elif loss_type in ("huber", "smooth_l1"):
        if thresholds is None:
            raise ValueError(f"loss_type {loss_type!r} needs the Huber thresholds")
        delta = thresholds.to(difference.device, torch.float32)
        delta = delta.view(-1, *([1] * (difference.ndim - 1)))
        error = 2 * (torch.sqrt(difference**2 + delta**2) - delta)
        if loss_type == "huber":
            error = delta * error
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    return error.mean(dim=list(range(1, error.ndim)))


def kohya_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    *,
    loss_type: str,
    huber_schedule: str,
    huber_c: float,
    huber_scale: float,
) -> torch.Tensor:
    """Each sample's loss for ``loss_type``, with the Huber threshold of its timestep."""
    thresholds = None
    if loss_type in ("huber", "smooth_l1"):
        thresholds = huber_thresholds(
            timesteps,
            alphas_cumprod,
            schedule=huber_schedule,
            huber_c=huber_c,
            huber_scale=huber_scale,
            num_train_timesteps=len(alphas_cumprod),
        )
    return per_sample_loss(prediction, target, loss_type, thresholds)


def adaptive_offset_noise(
    noise: torch.Tensor,
    latents: torch.Tensor,
    strength: float,
    adaptive_scale: float,
    *,
    random_strength: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Offset noise whose strength grows with each channel's mean latent: sd-scripts'
    ``apply_noise_offset`` with ``adaptive_noise_scale`` (offset = strength +
    scale·|mean(latent)|, clamped at 0, times N(0, 1) per sample and channel). With
    ``random_strength`` the base strength is scaled by one U(0, 1) draw per batch."""
    if random_strength:
        strength *= float(torch.rand(1, generator=generator))
    batch, channels = noise.shape[:2]
    mean = latents.float().mean(dim=(2, 3), keepdim=True).abs().cpu()
    offset = torch.clamp(strength + adaptive_scale * mean, min=0.0)
    draw = torch.randn((batch, channels, 1, 1), generator=generator)
    return noise + (offset * draw).to(noise.dtype)


def max_norm_ratio(delta: torch.Tensor, max_norm: float) -> float:
    """The factor that brings ``‖ΔW‖`` down to ``max_norm`` (1 when it is below)."""
    norm = float(delta.float().norm())
    return 1.0 if norm <= max_norm or norm == 0 else max_norm / norm


def apply_max_norm(models: Iterable[torch.nn.Module], max_norm: float) -> tuple[int, float]:
    """Max-norm regularisation of every adapter (sd-scripts' ``scale_weight_norms``,
    ``apply_max_norm_regularization``): a module whose ΔW has a Frobenius norm above
    ``max_norm`` has its factors scaled so that it is exactly ``max_norm``.

    ΔW is a product of the module's k adapter tensors (LoRA: A, B; LoHa: four; LoKr:
    two to four), so each is scaled by ratio^(1/k). Returns (modules scaled, the
    largest norm after scaling)."""
    scaled, largest = 0, 0.0
    with torch.no_grad():
        for model in models:
            for module in model.modules():
                if not isinstance(module, BaseTunerLayer):
                    continue
                for adapter in module.active_adapters:
                    factors = _adapter_factors(module, adapter)
                    if not factors:
                        continue
                    delta = module.get_delta_weight(adapter)
                    ratio = max_norm_ratio(delta, max_norm)
                    if ratio < 1:
                        scaled += 1
                        for tensor in factors:
                            tensor.mul_(ratio ** (1 / len(factors)))
                    largest = max(largest, float(delta.float().norm()) * ratio)
    return scaled, largest


def _adapter_factors(module: BaseTunerLayer, adapter: str) -> list[torch.nn.Parameter]:
    """The trainable tensors whose product is the adapter's ΔW (not DoRA's magnitude)."""
    factors = []
    for name, parameter in module.named_parameters():
        parts = name.split(".")
        layer = parts[0]
        if (
            adapter in parts
            and layer != "lora_magnitude_vector"
            and layer in module.adapter_layer_names
        ):
            factors.append(parameter)
    return factors

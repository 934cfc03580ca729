"""Speed and memory on CUDA: fast kernels where they exist, and a refusal to start a run
that would not fit in the GPU's memory.

Windows' NVIDIA driver spills into system RAM instead of failing when the GPU is full,
and training then becomes 10–100× slower without an error — the most common complaint
on the peers' trackers. :func:`estimate_peak_memory` predicts the peak before the first
step and :func:`check_memory_budget` refuses with what to turn on instead.

Everything here is a no-op or exact on the CPU, so the CPU tests run the same code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from lab.training.config import TrainConfig
from trainer.data import TrainingData
from trainer.errors import TrainerError
from trainer.models import BaseModel

logger = logging.getLogger(__name__)

# Elements of saved activations per (latent pixel × channel × block) of a UNet level,
# calibrated so that SD1.5 at 512², batch 1, fp16 without checkpointing comes to ≈4 GiB
# (what kohya/diffusers runs show) — a deliberately rough, slightly generous figure.
ACTIVATION_ELEMENTS_PER_UNIT = 460
# Gradient checkpointing keeps only block inputs: roughly a sixth of the activations.
CHECKPOINTING_FACTOR = 1 / 6
# Spare room for the CUDA context, allocator fragmentation and cuDNN workspaces.
OVERHEAD_BYTES = 1 << 30
BUDGET_FRACTION = 0.95


class MemoryBudgetError(TrainerError):
    """The run's estimated peak memory exceeds the device's budget."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of the run's expected peak on the training device, by kind."""

    weights: int
    trainable: int
    activations: int
    overhead: int = OVERHEAD_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.trainable + self.activations + self.overhead


def _bytes(dtype_name: str) -> int:
    return 4 if dtype_name == "no" else 2


def unet_activation_units(unet_config: dict, latent_pixels: int) -> int:
    """Σ over UNet levels of latent pixels at that level × channels × (1 + transformer
    depth): the shape of what backward must keep, without running the model."""
    channels = list(unet_config["block_out_channels"])
    depth = unet_config.get("transformer_layers_per_block", 1)
    depths = list(depth) if isinstance(depth, list | tuple) else [depth] * len(channels)
    kinds = list(unet_config["down_block_types"])
    units = 0
    for level, (width, layers, kind) in enumerate(zip(channels, depths, kinds, strict=True)):
        attention = layers if "CrossAttn" in kind else 0
        units += (latent_pixels >> (2 * level)) * width * (1 + attention)
    return units


def estimate_peak_memory(
    base: BaseModel, config: TrainConfig, data: TrainingData, *, trainable_count: int
) -> MemoryEstimate:
    """Predict the peak: frozen weights in the compute dtype, fp32 adapter weights with
    their gradients and two optimizer moments, and the activations of the largest bucket."""
    weight_bytes = _bytes(config.mixed_precision)
    frozen = sum(p.numel() for p in base.unet.parameters())
    # Frozen encoders whose outputs are cached leave the GPU after caching.
    cached_text = not config.train_text_encoder and config.cache_text_encoder_outputs
    for encoder in (base.text_encoder, base.text_encoder_2):
        if encoder is not None and not (cached_text and data.captions_static):
            frozen += sum(p.numel() for p in encoder.parameters())
    weights = frozen * weight_bytes
    if not config.cache_latents:
        weights += sum(p.numel() for p in base.vae.parameters()) * 4  # fp32 VAE stays
    scale = base.vae_scale_factor
    largest = max((r.bucket[0] // scale) * (r.bucket[1] // scale) for r in data.records)
    units = unet_activation_units(dict(base.unet.config), largest)
    activations = units * ACTIVATION_ELEMENTS_PER_UNIT * weight_bytes * config.train_batch_size
    if config.gradient_checkpointing:
        activations = int(activations * CHECKPOINTING_FACTOR)
    return MemoryEstimate(weights, trainable_count * 16, activations)


def device_budget(device: torch.device, memory_budget_gb: float | None) -> int | None:
    """Bytes the run may use: ``memory_budget_gb`` if set, else the GPU's total memory
    (CUDA only); None means no limit is known (CPU)."""
    if memory_budget_gb is not None:
        return int(memory_budget_gb * 2**30)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * BUDGET_FRACTION)
    return None


def check_memory_budget(estimate: MemoryEstimate, budget: int | None, config: TrainConfig) -> None:
    """Refuse to start when the estimate exceeds the budget, naming what would help."""
    gib = 2**30
    logger.info(
        "estimated peak memory %.1f GiB (weights %.1f, adapters+optimizer %.2f, activations %.1f)",
        estimate.total / gib,
        estimate.weights / gib,
        estimate.trainable / gib,
        estimate.activations / gib,
    )
    if budget is None or estimate.total <= budget:
        return
    advice = []
    if not config.gradient_checkpointing:
        advice.append("gradient_checkpointing = true")
    if config.mixed_precision == "no":
        advice.append("mixed_precision = 'bf16'")
    if not config.cache_latents:
        advice.append("cache_latents = true")
    if config.train_batch_size > 1:
        advice.append(f"train_batch_size below {config.train_batch_size}")
    advice.append("a lower resolution / max_bucket_reso")
    raise MemoryBudgetError(
        f"this run needs about {estimate.total / gib:.1f} GiB but the device has "
        f"{budget / gib:.1f} GiB; rather than spill into system memory (10-100x slower) "
        f"it will not start. Try: {', '.join(advice)}"
    )


def spill_warning(device: torch.device, fraction: float) -> str | None:
    """A warning when more than ``fraction`` of the GPU's memory is reserved (after the
    first step); the estimate may be wrong, and a silent spill is the worst outcome."""
    if device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    reserved = torch.cuda.memory_reserved(device)
    if reserved <= fraction * total:
        return None
    return (
        f"the run uses {reserved / 2**30:.1f} of {total / 2**30:.1f} GiB of GPU memory; "
        "if it spills into system RAM it becomes 10-100x slower. Lower "
        "train_batch_size or resolution, or enable gradient_checkpointing"
    )


def speed_up(unet: nn.Module, device: torch.device) -> None:
    """CUDA-only layout and kernel choices; nothing changes on the CPU."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA (flash / memory-efficient)
    if device.type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True  # buckets repeat: the autotuned kernels are reused
    unet.to(memory_format=torch.channels_last)


def compile_unet(unet: nn.Module) -> nn.Module:
    """Regional compilation: each repeated block is compiled once and reused, which takes
    a fraction of whole-model compile time for the same steady-state speed."""
    blocks = [m for m in unet.modules() if type(m).__name__ in _REPEATED_BLOCKS]
    if not blocks:
        return torch.compile(unet)
    for block in blocks:
        block.compile(dynamic=False)
    logger.info("torch.compile: %d repeated blocks compiled regionally", len(blocks))
    return unet


_REPEATED_BLOCKS = frozenset({"BasicTransformerBlock", "ResnetBlock2D"})

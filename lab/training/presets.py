"""Named presets: the seed guides' defaults per base family and subject kind.

Values come from the guides in the project's seeds (Valstrix's crash course for SD1.5:
AdamW with ``weight_decay=0.12 betas=0.9,0.99``, UNet/TE learning rates 1e-4/5e-5,
rank = alpha = 32, cosine with 3 restarts, 10 % warmup, min-SNR γ = 5, debiased
estimation loss, network dropout 0.1, batch size 2, keep_tokens for the trigger word,
no flip for characters with asymmetric details). A preset only supplies defaults: the
config file and then CLI overrides win.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from lab.training.errors import ConfigError

_SD15_BASE: dict[str, Any] = {
    "resolution": "512,512",
    "enable_bucket": True,
    "min_bucket_reso": 256,
    "max_bucket_reso": 1024,
    "bucket_reso_steps": 64,
    "caption_extension": ".txt",
    "network_module": "networks.lora",
    "network_dim": 32,
    "network_alpha": 32.0,
    "network_dropout": 0.1,
    "learning_rate": 1e-4,
    "unet_lr": 1e-4,
    "text_encoder_lr": 5e-5,
    "optimizer_type": "AdamW",
    "optimizer_args": ["weight_decay=0.12", "betas=0.9,0.99"],
    "lr_scheduler": "cosine_with_restarts",
    "lr_scheduler_num_cycles": 3,
    "lr_warmup_steps": 0.1,
    "train_batch_size": 2,
    "max_train_epochs": 10,
    "save_every_n_epochs": 1,
    "shuffle_caption": True,
    "min_snr_gamma": 5.0,
    "debiased_estimation_loss": True,
    "prior_loss_weight": 1.0,
    "cache_latents": True,
    "cache_latents_to_disk": True,
    "gradient_checkpointing": True,
    "mixed_precision": "fp16",
    "save_precision": "fp16",
    "clip_skip": 1,
}

# SDXL, from the same guide's SDXL column: 1024 minimum resolution, buckets up to 2048,
# UNet/TE learning rates 4e-4/4.5e-4, rank = alpha = 16, 20 % warmup, 5 epochs.
_SDXL_BASE: dict[str, Any] = {
    **_SD15_BASE,
    "resolution": "1024,1024",
    "min_bucket_reso": 512,
    "max_bucket_reso": 2048,
    "network_dim": 16,
    "network_alpha": 16.0,
    "learning_rate": 4e-4,
    "unet_lr": 4e-4,
    "text_encoder_lr": 4.5e-4,
    "lr_warmup_steps": 0.2,
    "max_train_epochs": 5,
    "mixed_precision": "bf16",
    "save_precision": "fp16",
}
_SDXL_BASE.pop("clip_skip")  # SDXL's conditioning is the penultimate layer already
# Pony and Illustrious are SDXL fine-tunes whose model pages ask for clip skip 2 (what
# SDXL's conditioning is anyway; the key records it in the metadata).
_NAMED_SDXL = {"sdxl": {}, "pony": {"clip_skip": 2}, "illustrious": {"clip_skip": 2}}
_KINDS = {
    "character": {"keep_tokens": 1, "flip_aug": False},
    "style": {"keep_tokens": 0, "flip_aug": True},
    "concept": {"keep_tokens": 1, "flip_aug": True},
}

PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        **{
            f"{base}-{kind}": MappingProxyType({**_SDXL_BASE, **extra, **kind_values})
            for base, extra in _NAMED_SDXL.items()
            for kind, kind_values in _KINDS.items()
        },
        # A person or character: keep the trigger tag first, never mirror (asymmetric
        # details such as a scar or a side parting would be learnt on both sides).
        "sd15-character": MappingProxyType({**_SD15_BASE, "keep_tokens": 1, "flip_aug": False}),
        # An art style: no trigger to protect; mirroring doubles the data safely.
        "sd15-style": MappingProxyType({**_SD15_BASE, "keep_tokens": 0, "flip_aug": True}),
        # A concept or pose: the trigger stays first; mirroring is usually harmless.
        "sd15-concept": MappingProxyType({**_SD15_BASE, "keep_tokens": 1, "flip_aug": True}),
    }
)


def preset_values(name: str) -> dict[str, Any]:
    """The defaults a preset supplies; raises :class:`ConfigError` for an unknown name."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ConfigError(f"unknown preset {name!r}; known presets: {known}") from None

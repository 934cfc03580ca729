"""Captions → the UNet's text conditioning, the way kohya and diffusers compute it.

SD1.5: the text encoder's last hidden state, or with ``clip_skip`` N the N-th-from-last
layer followed by the final layer norm (kohya). SDXL (Podell et al. 2023, "SDXL",
arXiv:2307.01952): both encoders' penultimate hidden states concatenated on the feature
axis, plus the second encoder's projected pooled output — what diffusers'
``StableDiffusionXLPipeline.encode_prompt`` computes, so samples match inference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import torch

from trainer.errors import ConfigError
from trainer.models import BaseModel

logger = logging.getLogger(__name__)


class Encoded(NamedTuple):
    """Per-caption conditioning: hidden states [B, 77, D] and, for SDXL, pooled [B, P]."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None


TextEncodeFn = Callable[[list[str]], Encoded]


def text_encoder_fn(
    base: BaseModel, device: torch.device, *, clip_skip: int | None, trained: bool
) -> TextEncodeFn:
    """The function training and sampling both use to encode captions; ``trained`` (the
    text encoders learn) keeps the gradients."""
    if base.is_sdxl:
        return _sdxl_encoder(base, device, clip_skip=clip_skip, trained=trained)
    return _sd15_encoder(base, device, clip_skip=clip_skip, trained=trained)


def _token_ids(tokenizer: object, captions: list[str], device: torch.device) -> torch.Tensor:
    """Token ids on ``device``: the encoder's own (a frozen, cached encoder may have been
    moved off the GPU; a caption it has not seen is then encoded where it is)."""
    return tokenizer(  # type: ignore[operator]
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,  # type: ignore[attr-defined]
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def _sd15_encoder(
    base: BaseModel, device: torch.device, *, clip_skip: int | None, trained: bool
) -> TextEncodeFn:
    tokenizer, text_encoder = base.tokenizer, base.text_encoder
    skip = clip_skip or 1
    layers = text_encoder.config.num_hidden_layers
    if skip > layers:
        raise ConfigError(f"clip_skip {skip} exceeds the text encoder's {layers} layers")
    # transformers ≥ 5 dropped CLIPTextModel's `text_model` wrapper; older versions have it.
    final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm

    def encode(captions: list[str]) -> Encoded:
        ids = _token_ids(tokenizer, captions, text_encoder.device)
        with torch.set_grad_enabled(trained):
            if skip == 1:
                return Encoded(text_encoder(ids)[0].to(device))
            hidden = text_encoder(ids, output_hidden_states=True).hidden_states[-skip]
            return Encoded(final_norm(hidden).to(device))

    return encode


def _sdxl_encoder(
    base: BaseModel, device: torch.device, *, clip_skip: int | None, trained: bool
) -> TextEncodeFn:
    if clip_skip not in (None, 1, 2):
        raise ConfigError(
            "clip_skip is fixed for SDXL (both encoders' penultimate layer, as at inference); "
            f"got clip_skip = {clip_skip}"
        )
    if clip_skip == 2:
        logger.info("clip_skip 2 is SDXL's own penultimate-layer conditioning already")
    encoders = [(base.tokenizer, base.text_encoder), (base.tokenizer_2, base.text_encoder_2)]

    def encode(captions: list[str]) -> Encoded:
        hidden: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        with torch.set_grad_enabled(trained):
            for tokenizer, encoder in encoders:
                ids = _token_ids(tokenizer, captions, encoder.device)
                out = encoder(ids, output_hidden_states=True)
                hidden.append(out.hidden_states[-2].to(device))
                pooled = out[0].to(device)  # the last encoder's projected pooled output
        return Encoded(torch.cat(hidden, dim=-1), pooled)

    return encode


def sdxl_time_ids(
    original: list[tuple[int, int]],
    crops: list[tuple[int, int]],
    targets: list[tuple[int, int]],
) -> torch.Tensor:
    """SDXL's micro-conditioning per image: (original h, w, crop top, left, target h, w).

    Sizes and crops come in as (width, height) / (left, top), the way the buckets hold
    them; the UNet wants height first.
    """
    rows = [
        [oh, ow, top, left, th, tw]
        for (ow, oh), (left, top), (tw, th) in zip(original, crops, targets, strict=True)
    ]
    return torch.tensor(rows, dtype=torch.float32)

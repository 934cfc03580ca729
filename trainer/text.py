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
    base: BaseModel,
    device: torch.device,
    *,
    clip_skip: int | None,
    trained: bool,
    max_token_length: int | None = None,
) -> TextEncodeFn:
    """The function training and sampling both use to encode captions; ``trained`` (the
    text encoders learn) keeps the gradients; ``max_token_length`` (kohya's 150 or 225)
    encodes long captions in 75-token windows."""
    build = _sdxl_encoder if base.is_sdxl else _sd15_encoder
    return build(
        base, device, clip_skip=clip_skip, trained=trained, max_token_length=max_token_length
    )


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


def chunked_token_ids(
    tokenizer: object, captions: list[str], device: torch.device, max_tokens: int
) -> tuple[torch.Tensor, int]:
    """kohya's long captions (``max_token_length`` 150 or 225): the caption is tokenised
    to ``max_tokens`` and cut into 75-token windows, each wrapped in BOS … EOS as CLIP
    expects; returns ids [B·n, 77] and n. For SDXL's second tokenizer (it pads with a
    token other than EOS) a window whose text runs to its end gets an EOS, and a window
    of padding only starts with one (sd-scripts' ``get_input_ids``)."""
    width = tokenizer.model_max_length  # type: ignore[attr-defined]
    ids = tokenizer(  # type: ignore[operator]
        captions,
        padding="max_length",
        max_length=max_tokens + 2,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id  # type: ignore[attr-defined]
    chunks = []
    for start in range(1, max_tokens + 1, width - 2):
        chunk = torch.cat([ids[:, :1], ids[:, start : start + width - 2], ids[:, -1:]], dim=1)
        if pad != eos:
            runs_on = (chunk[:, -2] != eos) & (chunk[:, -2] != pad)
            chunk[runs_on, -1] = eos
            chunk[chunk[:, 1] == pad, 1] = eos
        chunks.append(chunk)
    return torch.stack(chunks, dim=1).reshape(-1, width).to(device), len(chunks)


def merge_chunks(hidden: torch.Tensor, windows: int) -> torch.Tensor:
    """[B·n, 77, D] window states → [B, 2 + 75·n, D]: the first BOS, each window's 75
    tokens, the last EOS (sd-scripts' ``get_hidden_states``)."""
    width = hidden.shape[1]
    states = hidden.reshape(-1, windows * width, hidden.shape[-1])
    parts = [states[:, :1]]
    parts += [states[:, i * width + 1 : (i + 1) * width - 1] for i in range(windows)]
    parts.append(states[:, -1:])
    return torch.cat(parts, dim=1)


def _ids(
    tokenizer: object, captions: list[str], device: torch.device, max_tokens: int | None
) -> tuple[torch.Tensor, int]:
    if max_tokens is None:
        return _token_ids(tokenizer, captions, device), 1
    return chunked_token_ids(tokenizer, captions, device, max_tokens)


def _sd15_encoder(
    base: BaseModel,
    device: torch.device,
    *,
    clip_skip: int | None,
    trained: bool,
    max_token_length: int | None,
) -> TextEncodeFn:
    tokenizer, text_encoder = base.tokenizer, base.text_encoder
    skip = clip_skip or 1
    layers = text_encoder.config.num_hidden_layers
    if skip > layers:
        raise ConfigError(f"clip_skip {skip} exceeds the text encoder's {layers} layers")
    # transformers ≥ 5 dropped CLIPTextModel's `text_model` wrapper; older versions have it.
    final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm

    long = max_token_length

    def encode(captions: list[str]) -> Encoded:
        ids, windows = _ids(tokenizer, captions, text_encoder.device, long)
        with torch.set_grad_enabled(trained):
            if skip == 1:
                hidden = text_encoder(ids)[0]
            else:
                states = text_encoder(ids, output_hidden_states=True).hidden_states[-skip]
                hidden = final_norm(states)
        hidden = merge_chunks(hidden, windows) if long else hidden
        return Encoded(hidden.to(device))

    return encode


def _sdxl_encoder(
    base: BaseModel,
    device: torch.device,
    *,
    clip_skip: int | None,
    trained: bool,
    max_token_length: int | None,
) -> TextEncodeFn:
    if clip_skip not in (None, 1, 2):
        raise ConfigError(
            "clip_skip is fixed for SDXL (both encoders' penultimate layer, as at inference); "
            f"got clip_skip = {clip_skip}"
        )
    if clip_skip == 2:
        logger.info("clip_skip 2 is SDXL's own penultimate-layer conditioning already")
    encoders = [(base.tokenizer, base.text_encoder), (base.tokenizer_2, base.text_encoder_2)]

    long = max_token_length

    def encode(captions: list[str]) -> Encoded:
        hidden: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        with torch.set_grad_enabled(trained):
            for tokenizer, encoder in encoders:
                ids, windows = _ids(tokenizer, captions, encoder.device, long)
                out = encoder(ids, output_hidden_states=True)
                states = out.hidden_states[-2]
                hidden.append((merge_chunks(states, windows) if long else states).to(device))
                # The last encoder's projected pooled output; of the first window for a
                # long caption (sd-scripts).
                pooled = out[0][::windows].to(device)
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

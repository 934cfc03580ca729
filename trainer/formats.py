"""PEFT adapter weights → the key names A1111, Forge, ComfyUI and diffusers read.

One module of the base becomes one kohya name (``lora_unet_<path with _>``,
``lora_te_…`` for SD1.5, ``lora_te1_…``/``lora_te2_…`` for SDXL's two text encoders) with
the tensors of its network type. SD1.5 UNet paths are diffusers' (kohya trains SD1.5 on
the diffusers UNet); SDXL UNet paths are the original UNet's, as kohya's SDXL trainer
writes them (:mod:`trainer.sgm`).

======  ======================================================================
LoRA    ``lora_down.weight`` [r, in(,k,k)], ``lora_up.weight`` [out, r(,1,1)], ``alpha``
DoRA    LoRA's three plus ``dora_scale`` [out, 1(,1,1)] (LyCORIS ``wd_on_out``; diffusers
        maps it to PEFT's ``lora_magnitude_vector``)
LoHa    ``hada_w1_a`` [out, r], ``hada_w1_b`` [r, in·k·k], ``hada_w2_a``, ``hada_w2_b``,
        ``alpha`` (LyCORIS; ΔW = (w1_a·w1_b) ⊙ (w2_a·w2_b) · alpha / r)
LoKr    ``lokr_w1`` and ``lokr_w2`` or ``lokr_w2_a``/``lokr_w2_b``, ``alpha``
        (ΔW = w1 ⊗ w2 · alpha / r when a factor is decomposed)
======  ======================================================================

PEFT scales LoKr by alpha / r even when neither factor is decomposed, while LyCORIS,
ComfyUI and diffusers then apply no scale at all; for those modules the scale is baked
into ``lokr_w1`` and ``alpha`` is written as r, so every reader computes the same ΔW.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from trainer.sgm import SgmLayout, sgm_module_path

SD15_PREFIXES: Mapping[str, str] = {"unet": "lora_unet", "text_encoder": "lora_te"}
SDXL_PREFIXES: Mapping[str, str] = {
    "unet": "lora_unet",
    "text_encoder": "lora_te1",
    "text_encoder_2": "lora_te2",
}


def file_naming(unet_config: Mapping[str, Any], *, sdxl: bool) -> dict[str, Any]:
    """The naming keywords (``prefixes``, ``unet_layout``) of :func:`kohya_state_dict`
    and the savers for a base: SDXL files use the original UNet's names."""
    if sdxl:
        return {"prefixes": SDXL_PREFIXES, "unet_layout": SgmLayout.of(unet_config)}
    return {"prefixes": SD15_PREFIXES, "unet_layout": None}


# PEFT parameter suffix → kohya/LyCORIS tensor name.
_RENAMES: Mapping[str, str] = {
    "lora_A.weight": "lora_down.weight",
    "lora_B.weight": "lora_up.weight",
    "lora_magnitude_vector": "dora_scale",
    "lora_magnitude_vector.weight": "dora_scale",
    **{name: name for name in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")},
    **{name: name for name in ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2")},
    **{name: name for name in ("lokr_w2_a", "lokr_w2_b")},
}


def split_peft_key(key: str) -> tuple[str, str]:
    """``down_blocks.0.attn1.to_q.lora_A.weight`` → (module path, ``lora_A.weight``)."""
    for suffix in sorted(_RENAMES, key=len, reverse=True):
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    raise ValueError(f"unexpected PEFT key {key!r}: not a LoRA/DoRA/LoHa/LoKr weight")


def kohya_module_name(
    component: str,
    module_path: str,
    prefixes: Mapping[str, str] = SD15_PREFIXES,
    *,
    unet_layout: SgmLayout | None = None,
) -> str:
    """The kohya name of a diffusers/transformers module path; with ``unet_layout``
    (SDXL) UNet paths are first renamed to the original UNet's.

    transformers ≥ 5 flattened ``CLIPTextModel`` (``encoder.layers.0…`` instead of
    ``text_model.encoder.layers.0…``); kohya names, and every tool reading them, keep the
    ``text_model`` part, so it is restored here.
    """
    if component.startswith("text_encoder") and not module_path.startswith("text_model."):
        module_path = f"text_model.{module_path}"
    if component == "unet" and unet_layout is not None:
        module_path = sgm_module_path(module_path, unet_layout)
    return f"{prefixes[component]}_{module_path.replace('.', '_')}"


def kohya_state_dict(
    peft_states: Mapping[str, Mapping[str, torch.Tensor]],
    alphas: Mapping[str, Mapping[str, float]],
    ranks: Mapping[str, Mapping[str, int]],
    *,
    prefixes: Mapping[str, str] = SD15_PREFIXES,
    dtype: torch.dtype = torch.float32,
    unet_layout: SgmLayout | None = None,
) -> dict[str, torch.Tensor]:
    """PEFT state dicts per component → one kohya/LyCORIS state dict with each module's
    real alpha (``alphas[component][module path]``); ``unet_layout`` for SDXL."""
    result: dict[str, torch.Tensor] = {}
    for component, state in peft_states.items():
        modules: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state.items():
            module, suffix = split_peft_key(key)
            modules.setdefault(module, {})[_RENAMES[suffix]] = tensor.detach().float().cpu()
        for module, tensors in modules.items():
            name = kohya_module_name(component, module, prefixes, unet_layout=unet_layout)
            alpha = float(alphas[component][module])
            if "dora_scale" in tensors:
                tensors["dora_scale"] = _dora_scale(tensors["dora_scale"], tensors)
            if "lokr_w1" in tensors and "lokr_w2" in tensors:
                rank = ranks[component][module]
                tensors["lokr_w1"] = tensors["lokr_w1"] * (alpha / rank)
                alpha = float(rank)
            for part, tensor in tensors.items():
                result[f"{name}.{part}"] = tensor.to(dtype).contiguous()
            result[f"{name}.alpha"] = torch.tensor(alpha, dtype=dtype)
    return result


def _dora_scale(magnitude: torch.Tensor, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """PEFT's magnitude ([out] for Linear, [1, out, 1, 1] for conv) in LyCORIS's
    output-axis layout [out, 1(, 1, 1)], the shape of the layer's weight norm."""
    ndim = tensors["lora_down.weight"].dim()
    return magnitude.reshape(-1, *([1] * (ndim - 1)))

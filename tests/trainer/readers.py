"""An independent reading of kohya/LyCORIS files: ΔW per module the way ComfyUI's
weight adapters compute it (``comfy/weight_adapter/{lora,loha,lokr}.py``), written from
the formulas, so a test can merge a saved file into a fresh model and compare."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn


def module_delta(
    tensors: Mapping[str, torch.Tensor], key: str, weight: torch.Tensor
) -> torch.Tensor | None:
    """The weight change a file holds for the module named ``key`` (kohya name)."""
    alpha = tensors.get(f"{key}.alpha")
    if f"{key}.lora_down.weight" in tensors:
        down = tensors[f"{key}.lora_down.weight"].float()
        up = tensors[f"{key}.lora_up.weight"].float()
        scale = alpha.item() / down.shape[0]
        delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * scale
        dora = tensors.get(f"{key}.dora_scale")
        if dora is None:
            return delta
        # DoRA on the output axis: W' = m · (W + ΔW) / ‖W + ΔW‖ per output channel.
        combined = weight + delta
        norm = combined.flatten(1).norm(dim=1).reshape(-1, *([1] * (weight.dim() - 1)))
        return dora.float() * combined / norm - weight
    if f"{key}.hada_w1_a" in tensors:
        w1 = tensors[f"{key}.hada_w1_a"].float() @ tensors[f"{key}.hada_w1_b"].float()
        w2 = tensors[f"{key}.hada_w2_a"].float() @ tensors[f"{key}.hada_w2_b"].float()
        rank = tensors[f"{key}.hada_w1_b"].shape[0]
        return (w1 * w2).reshape(weight.shape) * (alpha.item() / rank)
    if f"{key}.lokr_w1" in tensors or f"{key}.lokr_w1_a" in tensors:
        dim = None
        if f"{key}.lokr_w1" in tensors:
            w1 = tensors[f"{key}.lokr_w1"].float()
        else:
            dim = tensors[f"{key}.lokr_w1_b"].shape[0]
            w1 = tensors[f"{key}.lokr_w1_a"].float() @ tensors[f"{key}.lokr_w1_b"].float()
        if f"{key}.lokr_w2" in tensors:
            w2 = tensors[f"{key}.lokr_w2"].float()
        else:
            dim = tensors[f"{key}.lokr_w2_b"].shape[0]
            w2 = tensors[f"{key}.lokr_w2_a"].float() @ tensors[f"{key}.lokr_w2_b"].float()
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        scale = alpha.item() / dim if dim is not None else 1.0
        return torch.kron(w1, w2).reshape(weight.shape) * scale
    return None


def merge_file(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], name_of: Callable[[str], str]
) -> int:
    """Add every module's ΔW from ``tensors`` to ``model``; returns how many merged."""
    merged = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear | nn.Conv2d):
                continue
            delta = module_delta(tensors, name_of(name), module.weight.float())
            if delta is not None:
                module.weight += delta.to(module.weight.dtype)
                merged += 1
    return merged

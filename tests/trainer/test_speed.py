"""Speed settings that must hold on every device: SDPA attention, regional compile."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.speed import compile_unet, speed_up


def test_sdpa_attention_and_no_cuda_only_changes_on_cpu(tiny_model: Path) -> None:
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    speed_up(unet, torch.device("cpu"))
    processors = unet.attn_processors.values()
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)
    assert unet.conv_in.weight.is_contiguous()  # channels-last is for CUDA only


def test_regional_compile_wraps_each_repeated_block_once(tiny_model: Path) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    compiled = compile_unet(unet)
    assert compiled is unet  # the model itself stays eager; its blocks compile lazily
    kinds = {"BasicTransformerBlock", "ResnetBlock2D"}
    blocks = [m for m in unet.modules() if type(m).__name__ in kinds]
    assert blocks and all(m._compiled_call_impl is not None for m in blocks)
    assert unet._compiled_call_impl is None

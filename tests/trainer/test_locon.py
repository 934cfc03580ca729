"""LoCon (kohya's ``conv_dim``/``conv_alpha``): 3×3 convs get their own rank and alpha."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.loop import train
from trainer.tiny import merge_kohya_lora


def test_locon_file_shapes_alphas_and_diffusers_load(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    config = build_config(
        base_values(
            tiny_model,
            dataset,
            tmp_path / "out",
            network_args=["conv_dim=2", "conv_alpha=1"],
            learning_rate=1e-2,
            network_train_unet_only=True,
        )
    )
    result = train(config)
    tensors = load_file(result.final_path)

    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    weight = unet.down_blocks[0].resnets[0].conv1.weight  # [16, 16, 3, 3]
    assert tensors[f"{conv}.lora_down.weight"].shape == (2, weight.shape[1], 3, 3)
    assert tensors[f"{conv}.lora_up.weight"].shape == (weight.shape[0], 2, 1, 1)
    assert tensors[f"{conv}.alpha"].item() == 1.0
    # Linear layers inside resnets (time_emb_proj) keep the network's rank and alpha.
    linear = "lora_unet_down_blocks_0_resnets_0_time_emb_proj"
    assert tensors[f"{linear}.lora_down.weight"].shape[0] == 4
    assert tensors[f"{linear}.alpha"].item() == 2.0
    assert "lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight" in tensors
    attention = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert tensors[f"{attention}.alpha"].item() == 2.0
    meta = safe_open(str(result.final_path), "pt").metadata()
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1"}

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    pipe.load_lora_weights(str(result.final_path), adapter_name="locon")
    merged = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    count = merge_kohya_lora(merged, tensors)
    assert count == len({k.split(".")[0] for k in tensors})  # every key maps to a module
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(4))
    step = torch.tensor([500])
    with torch.no_grad():
        base = unet(sample, step, context).sample
        expected = merged(sample, step, context).sample
        loaded = pipe.unet(sample, step, context).sample
    assert (expected - base).abs().max() > 1e-4  # the LoCon did change the UNet
    torch.testing.assert_close(loaded, expected, atol=1e-5, rtol=1e-4)

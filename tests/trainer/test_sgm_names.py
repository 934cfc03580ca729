"""SDXL files name UNet modules as kohya's SDXL trainer does (the original UNet's paths),
and diffusers, the ComfyUI/A1111-style reading and our own network still agree on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.trainer.conftest import random_network
from tests.trainer.readers import merge_file
from trainer.formats import SDXL_PREFIXES, kohya_module_name, kohya_state_dict
from trainer.network import UNET_CONV_BLOCKS, UNET_TARGET_BLOCKS, target_module_names
from trainer.sgm import SgmLayout, sgm_module_path

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, the parts that shape it.
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "cross_attention_dim": 2048,
}


def kohya_sdxl_prefixes() -> list[tuple[str, str]]:
    """(original, diffusers) prefix pairs as sd-scripts' ``sdxl_model_util.
    make_unet_conversion_map`` lists them for SDXL (3 levels, 2 layers per block),
    transcribed from its loops; the resnet renames apply under resnet prefixes only."""
    resnet = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("emb_layers.1.", "time_emb_proj."),
        ("skip_connection.", "conv_shortcut."),
    ]
    layer: list[tuple[str, str]] = []
    for i in range(3):
        for j in range(2):
            layer.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            layer.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(3):
            layer.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            layer.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        layer.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        layer.append((f"output_blocks.{3 * i + 2}.2.", f"up_blocks.{i}.upsamplers.0."))
    layer.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        layer.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    pairs = []
    for sd, hf in layer:
        if "resnets" in hf:
            pairs += [(sd + sd_res, hf + hf_res) for sd_res, hf_res in resnet]
        else:
            pairs.append((sd, hf))
    return pairs


def kohya_name(path: str) -> str:
    """How kohya's SDXL trainer names the LoRA of the diffusers module ``path``."""
    key = path + "."
    for sd, hf in kohya_sdxl_prefixes():
        if key.startswith(hf):
            key = sd + key[len(hf) :]
            break
    else:
        raise AssertionError(f"kohya's map has no entry for {path}")
    return "lora_unet_" + key.rstrip(".").replace(".", "_")


def test_sdxl_unet_names_are_kohyas_for_every_locon_target() -> None:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet = UNet2DConditionModel(**SDXL_UNET)
    layout = SgmLayout.of(unet.config)
    targets = target_module_names(unet, UNET_TARGET_BLOCKS)
    targets += target_module_names(unet, UNET_CONV_BLOCKS, convolutions=True)
    names = {kohya_module_name("unet", t, SDXL_PREFIXES, unet_layout=layout) for t in targets}
    assert names == {kohya_name(t) for t in targets}
    # 722 transformer layers; 17 resnets × 3 + 11 shortcuts; 2 down- and 2 upsamplers.
    assert len(names) == len(targets) == 788
    assert {"lora_unet_output_blocks_2_2_conv", "lora_unet_output_blocks_5_2_conv"} <= names
    assert {"lora_unet_input_blocks_3_0_op", "lora_unet_input_blocks_6_0_op"} <= names
    for name in (
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
        "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_0_proj",
        "lora_unet_middle_block_1_proj_in",
        "lora_unet_middle_block_2_emb_layers_1",
        "lora_unet_output_blocks_0_0_skip_connection",
        "lora_unet_output_blocks_8_0_out_layers_3",
    ):
        assert name in names
    assert not any("down_blocks" in n or "up_blocks" in n or "mid_block" in n for n in names)


def test_the_rule_is_the_inverse_of_diffusers_original_unet_conversion(
    tiny_sdxl_model: Path,
) -> None:
    """Every tiny-SDXL UNet weight renamed by the rule is read back by diffusers'
    single-file (original layout) converter under its own name."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = UNet2DConditionModel.from_pretrained(tiny_sdxl_model / "unet", local_files_only=True)
    layout = SgmLayout.of(unet.config)
    state = unet.state_dict()
    original = {}
    for key, tensor in state.items():
        module, _, parameter = key.rpartition(".")
        original[f"model.diffusion_model.{sgm_module_path(module, layout)}.{parameter}"] = tensor
    back = convert_ldm_unet_checkpoint(original, dict(unet.config))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_a_per_block_layers_per_block_is_refused() -> None:
    with pytest.raises(ValueError, match="layers_per_block"):
        SgmLayout.of({"layers_per_block": (1, 2), "up_block_types": ()})
    with pytest.raises(ValueError, match="not a module"):
        sgm_module_path("lora_whatever", SgmLayout(1, (True, False)))


@pytest.mark.parametrize("args", [[], ["conv_dim=2", "conv_alpha=1"]], ids=["lora", "locon"])
def test_diffusers_readers_and_our_network_agree_on_sgm_named_files(
    args: list[str], tiny_sdxl_model: Path, dataset: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionXLPipeline

    base, network = random_network(tiny_sdxl_model, dataset, tmp_path / "o", args)
    layout = SgmLayout.of(base.unet.config)
    tensors = kohya_state_dict(
        network.state_dicts(), network.alphas, network.ranks, prefixes=SDXL_PREFIXES,
        unet_layout=layout,
    )  # fmt: skip
    path = tmp_path / "sgm.safetensors"
    save_file(tensors, str(path))
    unet_names = {k.split(".")[0] for k in tensors if k.startswith("lora_unet_")}
    assert all(n.startswith(("lora_unet_input_blocks", "lora_unet_middle_block",
                             "lora_unet_output_blocks")) for n in unet_names)  # fmt: skip
    if args:
        assert "lora_unet_output_blocks_1_2_conv" in unet_names  # the upsampler A1111 dropped

    # The ComfyUI/A1111 reading: SGM names matched against the original-layout modules.
    reference = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_model, local_files_only=True)
    merged = merge_file(
        reference.unet,
        tensors,
        lambda n: kohya_module_name("unet", n, SDXL_PREFIXES, unet_layout=layout),
    )
    assert merged == len(unet_names)
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_model, local_files_only=True)
    pipe.load_lora_weights(str(path), adapter_name="sgm")

    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    context = torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(2))
    added = {
        "text_embeds": torch.randn(1, 32, generator=torch.Generator().manual_seed(3)),
        "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]),
    }
    step = torch.tensor([400])
    network.unet.eval()
    with torch.no_grad():
        ours = network.unet(sample, step, context, added_cond_kwargs=added).sample
        with network.strength(0.0):
            plain = network.unet(sample, step, context, added_cond_kwargs=added).sample
        diffusers_out = pipe.unet(sample, step, context, added_cond_kwargs=added).sample
        merged_out = reference.unet(sample, step, context, added_cond_kwargs=added).sample
    assert (ours - plain).abs().max() > 1e-3  # the network changes the output
    np.testing.assert_allclose(diffusers_out.numpy(), ours.numpy(), atol=1e-5)
    np.testing.assert_allclose(merged_out.numpy(), ours.numpy(), atol=1e-5)


def test_the_trainers_save_path_writes_sgm_names(
    tiny_sdxl_model: Path, dataset: Path, tmp_path: Path
) -> None:
    """The trainer's own save path (not only the formatter) writes the SDXL naming."""
    from lab.training.config import build_config
    from tests.trainer.conftest import base_values
    from trainer.loop import train

    config = build_config(
        base_values(tiny_sdxl_model, dataset, tmp_path / "o", max_train_epochs=1,
                    network_train_unet_only=True, network_args=["conv_dim=2"])
    )  # fmt: skip
    tensors = load_file(train(config).final_path)
    assert "lora_unet_output_blocks_1_2_conv.lora_down.weight" in tensors
    assert "lora_unet_input_blocks_3_1_proj_in.alpha" in tensors
    assert not any("down_blocks" in k or "up_blocks" in k for k in tensors)

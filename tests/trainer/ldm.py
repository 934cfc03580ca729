"""Write a diffusers SD1.5 folder as one original-layout (LDM) `.safetensors` file.

The reverse of the renames diffusers' ``from_single_file`` applies, for a UNet with any
``layers_per_block``; enough to test single-file loading without downloading a real
checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _unet_key(key: str, layers: int, up_has_attention: dict[int, bool]) -> str:
    module, _, param = key.rpartition(".")
    if module in _UNET_TOP:
        return f"{_UNET_TOP[module]}.{param}"
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * (layers + 1) + j + 1
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_resnet(rest)}"
        return f"input_blocks.{index}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
        block, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * (layers + 1) + j
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_resnet(rest)}"
        return f"output_blocks.{index}.1.{rest}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        block = int(m[1])
        slot = 2 if up_has_attention[block] else 1
        return f"output_blocks.{block * (layers + 1) + layers}.{slot}.conv.{m[2]}"
    raise KeyError(key)


def _resnet(rest: str) -> str:
    module, _, param = rest.rpartition(".")
    return f"{_UNET_RESNET.get(module, module)}.{param}"


def _vae_key(key: str, tensor: torch.Tensor, blocks: int) -> tuple[str, torch.Tensor]:
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}", tensor
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", tensor
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}.{m[3]}", tensor
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}", tensor
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}", tensor
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
        module = _VAE_ATTENTION[m[2]]
        if m[3] == "weight" and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # LDM's attention uses 1×1 convs
        return f"{m[1]}.mid.attn_1.{module}.{m[3]}", tensor
    return key, tensor


def save_single_file(model_dir: Path, target: Path) -> Path:
    """Write ``model_dir`` (a diffusers SD1.5 folder) as an LDM-layout single file."""
    unet_config = json.loads((model_dir / "unet" / "config.json").read_text())
    layers = unet_config["layers_per_block"]
    up_has_attention = {
        i: kind.startswith("CrossAttn") for i, kind in enumerate(unet_config["up_block_types"])
    }
    vae_config = json.loads((model_dir / "vae" / "config.json").read_text())
    blocks = len(vae_config["up_block_types"])
    checkpoint: dict[str, torch.Tensor] = {}
    unet = load_file(model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    for key, tensor in unet.items():
        checkpoint["model.diffusion_model." + _unet_key(key, layers, up_has_attention)] = tensor
    vae = load_file(model_dir / "vae" / "diffusion_pytorch_model.safetensors")
    for key, tensor in vae.items():
        new_key, new_tensor = _vae_key(key, tensor, blocks)
        checkpoint["first_stage_model." + new_key] = new_tensor.contiguous()
    text = load_file(model_dir / "text_encoder" / "model.safetensors")
    for key, tensor in text.items():
        full = key if key.startswith("text_model.") else f"text_model.{key}"
        checkpoint["cond_stage_model.transformer." + full] = tensor
    save_file(checkpoint, str(target))
    return target

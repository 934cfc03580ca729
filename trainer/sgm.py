"""diffusers UNet module paths → the original (Stability "SGM"/LDM) UNet's, for SDXL files.

kohya's ``sdxl_train_network.py`` trains on its own copy of the original SDXL UNet
(``library/sdxl_original_unet.py``, filled from diffusers weights by
``library/sdxl_model_util``), so its LoRA keys are that UNet's module paths with ``.``
→ ``_``: ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``,
``lora_unet_middle_block_0_in_layers_2``, ``lora_unet_output_blocks_2_2_conv``. A1111
matches those names against its own (original-layout) SDXL model and LyCORIS inside
kohya's scripts against kohya's UNet; with diffusers names A1111 drops the upsampler
convs and LyCORIS matches no UNet module at all.

The layout, for ``L = layers_per_block`` (SDXL: 3 levels, L = 2):

- ``input_blocks.0.0`` is ``conv_in``; down level ``i`` holds ``input_blocks.{1 + i(L+1) + j}``
  (``.0`` its ``j``-th resnet, ``.1`` its transformer) and, but for the last level, its
  downsampler at ``input_blocks.{(i+1)(L+1)}.0.op``;
- ``middle_block.0``/``.1``/``.2``: resnet, transformer, resnet;
- up level ``i`` holds ``output_blocks.{i(L+1) + j}`` for its L + 1 resnets (``.0``) and
  transformers (``.1``); its upsampler follows in the last of them (``.2.conv`` after a
  transformer, ``.1.conv`` without one);
- inside a resnet ``norm1/conv1/norm2/conv2/time_emb_proj/conv_shortcut`` are
  ``in_layers.0/in_layers.2/out_layers.0/out_layers.3/emb_layers.1/skip_connection``;
  inside a transformer the names are diffusers' own (``proj_in``, ``attn1.to_q``, …).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SgmLayout", "sgm_module_path"]

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_BLOCK = re.compile(
    r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(.*)"
)
_MID = re.compile(r"mid_block\.(resnets|attentions)\.(\d+)(.*)")


@dataclass(frozen=True)
class SgmLayout:
    """What the renaming needs of a diffusers ``UNet2DConditionModel`` config."""

    layers_per_block: int
    up_has_attention: tuple[bool, ...]

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> SgmLayout:
        layers = config["layers_per_block"]
        if not isinstance(layers, int):
            raise ValueError(
                f"layers_per_block {layers!r} differs per block; the original UNet layout "
                "needs one value"
            )
        up = tuple("CrossAttn" in kind for kind in config["up_block_types"])
        return cls(layers_per_block=layers, up_has_attention=up)


def sgm_module_path(path: str, layout: SgmLayout) -> str:
    """The original-UNet path of the diffusers module ``path``
    (``up_blocks.0.upsamplers.0.conv`` → ``output_blocks.2.2.conv`` for SDXL)."""
    stride = layout.layers_per_block + 1
    for name, target in _TOP.items():
        if path == name or path.startswith(name + "."):
            return target + path[len(name) :]
    if match := _BLOCK.fullmatch(path):
        side, level, kind, index, rest = match[1], int(match[2]), match[3], int(match[4]), match[5]
        if kind == "downsamplers":
            return f"input_blocks.{(level + 1) * stride}.0{rest.replace('.conv', '.op', 1)}"
        if kind == "upsamplers":
            slot = 2 if layout.up_has_attention[level] else 1
            return f"output_blocks.{level * stride + layout.layers_per_block}.{slot}{rest}"
        slot = 0 if kind == "resnets" else 1
        rest = _resnet(rest) if kind == "resnets" else rest
        if side == "down_blocks":
            return f"input_blocks.{1 + level * stride + index}.{slot}{rest}"
        return f"output_blocks.{level * stride + index}.{slot}{rest}"
    if match := _MID.fullmatch(path):
        kind, index, rest = match[1], int(match[2]), match[3]
        if kind == "attentions":
            return f"middle_block.1{rest}"
        return f"middle_block.{2 * index}{_resnet(rest)}"
    raise ValueError(f"{path!r} is not a module of an SDXL-shaped UNet")


def _resnet(rest: str) -> str:
    """``.conv1`` → ``.in_layers.2`` (and the other resnet renames); ``rest`` may go on
    below the renamed layer (``.conv1.weight``)."""
    name, _, tail = rest.lstrip(".").partition(".")
    renamed = _RESNET.get(name, name)
    return f".{renamed}" + (f".{tail}" if tail else "")

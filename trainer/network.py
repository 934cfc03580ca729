"""The LoRA network: PEFT adapters on the modules kohya's ``networks.lora`` targets.

kohya wraps every ``nn.Linear`` and 1×1 ``nn.Conv2d`` inside the UNet's
``Transformer2DModel`` blocks (attention q/k/v/out, feed-forward, ``proj_in``/
``proj_out``) and, for the text encoder, inside ``CLIPAttention``/``CLIPMLP``. Targeting
exactly those modules, with PEFT's scaling ``alpha / r`` (kohya's too), is what makes
the saved file a drop-in kohya LoRA.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft import set_peft_model_state_dict as _set_state
from torch import nn

from lab.training.config import TrainConfig

logger = logging.getLogger(__name__)

UNET_TARGET_BLOCKS = frozenset({"Transformer2DModel"})
# With LoCon (``conv_dim``) kohya also wraps the layers of these blocks: 3×3 convs get
# ``conv_dim``/``conv_alpha``, their Linear and 1×1 convs the network's rank and alpha.
UNET_CONV_BLOCKS = frozenset({"ResnetBlock2D", "Downsample2D", "Upsample2D"})
TEXT_ENCODER_TARGET_BLOCKS = frozenset({"CLIPAttention", "CLIPSdpaAttention", "CLIPMLP"})
ADAPTER_NAME = "default"


def _is_target_layer(module: nn.Module, *, convolutions: bool = False) -> bool:
    if isinstance(module, nn.Linear):
        return True
    if not isinstance(module, nn.Conv2d):
        return False
    return convolutions or tuple(module.kernel_size) == (1, 1)


def _is_wide_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


def target_module_names(
    model: nn.Module, block_classes: Iterable[str], *, convolutions: bool = False
) -> list[str]:
    """Full names of the layers kohya would wrap inside the given blocks: Linear and 1×1
    conv, plus every other conv when ``convolutions`` (LoCon)."""
    blocks = frozenset(block_classes)
    names: list[str] = []
    for block_name, block in model.named_modules():
        if type(block).__name__ not in blocks:
            continue
        for child_name, child in block.named_modules():
            if child_name and _is_target_layer(child, convolutions=convolutions):
                names.append(f"{block_name}.{child_name}")
    return sorted(dict.fromkeys(names))


@dataclass
class LoraNetwork:
    """The adapters injected into the UNet (and optionally the text encoder)."""

    unet: nn.Module
    text_encoder: nn.Module | None
    rank: int
    alpha: float
    alphas: dict[str, dict[str, float]]
    """Per component, the alpha of each wrapped module (LoCon convs differ)."""

    def unet_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.unet.named_parameters() if "lora_" in n]

    def text_encoder_parameters(self) -> list[nn.Parameter]:
        if self.text_encoder is None:
            return []
        return [p for n, p in self.text_encoder.named_parameters() if "lora_" in n]

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """PEFT state dicts per component (``unet``/``text_encoder``), detached copies."""
        parts = {"unet": self.unet}
        if self.text_encoder is not None:
            parts["text_encoder"] = self.text_encoder
        return {
            name: {
                k: v.detach().clone()
                for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME).items()
            }
            for name, model in parts.items()
        }

    def load_state_dicts(self, states: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore what :meth:`state_dicts` returned (resume)."""
        parts = {"unet": self.unet, "text_encoder": self.text_encoder}
        for name, state in states.items():
            model = parts.get(name)
            if model is None:
                raise KeyError(f"the saved state has a {name} LoRA but this run has none")
            result = _set_state(model, state, adapter_name=ADAPTER_NAME)
            missing = [k for k in result.unexpected_keys if "lora_" in k]
            if missing:
                raise KeyError(f"LoRA weights that match no module: {missing[:3]}")


def apply_lora(unet: nn.Module, text_encoder: nn.Module | None, config: TrainConfig) -> LoraNetwork:
    """Inject LoRA adapters; only their weights require grad afterwards."""
    rank, alpha = config.network_dim, config.network_alpha
    alphas = {"unet": _inject(unet, _unet_targets(unet, config), config)}
    if text_encoder is not None:
        targets = target_module_names(text_encoder, TEXT_ENCODER_TARGET_BLOCKS)
        alphas["text_encoder"] = _inject(text_encoder, targets, config)
    network = LoraNetwork(
        unet=unet, text_encoder=text_encoder, rank=rank, alpha=alpha, alphas=alphas
    )
    count = sum(p.numel() for p in network.unet_parameters() + network.text_encoder_parameters())
    logger.info("LoRA rank %d alpha %g: %.2fM trainable parameters", rank, alpha, count / 1e6)
    return network


def _unet_targets(unet: nn.Module, config: TrainConfig) -> list[str]:
    targets = target_module_names(unet, UNET_TARGET_BLOCKS)
    if config.conv_dim is not None:
        targets += target_module_names(unet, UNET_CONV_BLOCKS, convolutions=True)
    return sorted(dict.fromkeys(targets))


def _inject(model: nn.Module, targets: list[str], config: TrainConfig) -> dict[str, float]:
    """Wrap ``targets`` with LoRA; returns each wrapped module's alpha."""
    if not targets:
        raise ValueError(f"no LoRA target layers found in {type(model).__name__}")
    modules = dict(model.named_modules())
    wide = [name for name in targets if _is_wide_conv(modules[name])]
    # Escaped full names: PEFT reads pattern keys as regular expressions.
    rank_pattern = {re.escape(name): config.conv_dim for name in wide}
    alpha_pattern = {re.escape(name): config.conv_alpha for name in wide}
    lora_config = LoraConfig(
        r=config.network_dim,
        lora_alpha=config.network_alpha,
        lora_dropout=config.network_dropout or 0.0,
        # Exact full names: a suffix pattern like "to_q" could also catch layers kohya skips.
        target_modules=targets,
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        init_lora_weights=True,  # A: Kaiming-uniform, B: zeros — kohya's init too.
    )
    model.requires_grad_(False)
    inject_adapter_in_model(lora_config, model, adapter_name=ADAPTER_NAME)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return {
        name: float(config.conv_alpha if name in wide else config.network_alpha)  # type: ignore[arg-type]
        for name in targets
    }

"""The network: PEFT adapters (LoRA, LoCon, DoRA, LoHa, LoKr) on the modules kohya targets.

kohya wraps every ``nn.Linear`` and 1×1 ``nn.Conv2d`` inside the UNet's
``Transformer2DModel`` blocks (attention q/k/v/out, feed-forward, ``proj_in``/
``proj_out``) and, for the text encoder, inside ``CLIPAttention``/``CLIPMLP``. Targeting
exactly those modules, with PEFT's scaling ``alpha / r`` (kohya's too), is what makes
the saved file a drop-in kohya LoRA. LyCORIS's LoHa (Hyeon-Woo et al. 2022, "FedPara",
arXiv:2108.06098) and LoKr (Yeh et al. 2024, "LyCORIS", arXiv:2309.14859) and DoRA (Liu
et al. 2024, arXiv:2402.09353) use the same targets and PEFT's implementations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import (
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
)
from peft import set_peft_model_state_dict as _set_state
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from lab.training.config import TrainConfig

logger = logging.getLogger(__name__)

UNET_TARGET_BLOCKS = frozenset({"Transformer2DModel"})
# With LoCon (``conv_dim``) kohya also wraps the layers of these blocks: 3×3 convs get
# ``conv_dim``/``conv_alpha``, their Linear and 1×1 convs the network's rank and alpha.
UNET_CONV_BLOCKS = frozenset({"ResnetBlock2D", "Downsample2D", "Upsample2D"})
TEXT_ENCODER_TARGET_BLOCKS = frozenset({"CLIPAttention", "CLIPSdpaAttention", "CLIPMLP"})
ADAPTER_NAME = "default"
# Substrings of the names of PEFT's trainable adapter parameters, per network type.
ADAPTER_PARAMETER_MARKERS = ("lora_", "hada_", "lokr_")


def is_adapter_parameter(name: str) -> bool:
    return any(marker in name for marker in ADAPTER_PARAMETER_MARKERS)


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
    ranks: dict[str, dict[str, int]]
    """Per component, the rank of each wrapped module."""
    text_encoder_2: nn.Module | None = None
    """SDXL's second text encoder, when it is trained."""

    def components(self) -> dict[str, nn.Module]:
        """The models holding adapters, by component name (``unet``, ``text_encoder``…)."""
        parts = {"unet": self.unet, "text_encoder": self.text_encoder}
        parts["text_encoder_2"] = self.text_encoder_2
        return {name: model for name, model in parts.items() if model is not None}

    def unet_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.unet.named_parameters() if is_adapter_parameter(n)]

    def text_encoder_parameters(self) -> list[nn.Parameter]:
        return [
            p
            for name, model in self.components().items()
            if name != "unet"
            for n, p in model.named_parameters()
            if is_adapter_parameter(n)
        ]

    def state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        """PEFT state dicts per component (``unet``/``text_encoder``), detached copies."""
        return {
            name: {
                k: v.detach().clone()
                for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME).items()
            }
            for name, model in self.components().items()
        }

    @contextmanager
    def strength(self, weight: float) -> Iterator[None]:
        """Apply the network at ``weight`` the way A1111 and ComfyUI apply a LoRA's
        strength: W + weight · (W_trained − W), for every network type (DoRA included).

        Each wrapped layer's trained weight is obtained by PEFT's merge/unmerge; inside
        the block the adapters are off and the base weights hold the blend. At weight 0
        the base weights are exactly the originals.
        """
        layers = [
            m
            for model in self.components().values()
            for m in model.modules()
            if isinstance(m, BaseTunerLayer)
        ]
        originals: list[tuple[BaseTunerLayer, torch.Tensor]] = []
        try:
            with torch.no_grad():
                for layer in layers:
                    base = layer.get_base_layer()
                    original = base.weight.detach().clone()
                    layer.merge(adapter_names=[ADAPTER_NAME])
                    trained = base.weight.detach().clone()
                    layer.unmerge()
                    originals.append((layer, original))
                    base.weight.copy_(original + weight * (trained - original))
                    layer.enable_adapters(False)
            yield
        finally:
            with torch.no_grad():
                for layer, original in originals:
                    layer.get_base_layer().weight.copy_(original)
                    layer.enable_adapters(True)

    def load_state_dicts(self, states: dict[str, dict[str, torch.Tensor]]) -> None:
        """Restore what :meth:`state_dicts` returned (resume)."""
        parts = self.components()
        for name, state in states.items():
            model = parts.get(name)
            if model is None:
                raise KeyError(f"the saved state has a {name} LoRA but this run has none")
            result = _set_state(model, state, adapter_name=ADAPTER_NAME)
            missing = [k for k in result.unexpected_keys if is_adapter_parameter(k)]
            if missing:
                raise KeyError(f"LoRA weights that match no module: {missing[:3]}")


def apply_lora(
    unet: nn.Module,
    text_encoder: nn.Module | None,
    config: TrainConfig,
    text_encoder_2: nn.Module | None = None,
) -> LoraNetwork:
    """Inject the adapters; only their weights require grad afterwards."""
    rank, alpha = config.network_dim, config.network_alpha
    wrapped = {"unet": _inject(unet, _unet_targets(unet, config), config)}
    for name, encoder in (("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)):
        if encoder is not None:
            targets = target_module_names(encoder, TEXT_ENCODER_TARGET_BLOCKS)
            wrapped[name] = _inject(encoder, targets, config)
    alphas = {part: {n: a for n, (_, a) in mods.items()} for part, mods in wrapped.items()}
    ranks = {part: {n: r for n, (r, _) in mods.items()} for part, mods in wrapped.items()}
    network = LoraNetwork(
        unet=unet,
        text_encoder=text_encoder,
        rank=rank,
        alpha=alpha,
        alphas=alphas,
        ranks=ranks,
        text_encoder_2=text_encoder_2,
    )
    count = sum(p.numel() for p in network.unet_parameters() + network.text_encoder_parameters())
    logger.info(
        "%s rank %d alpha %g: %.2fM trainable parameters",
        "DoRA" if config.use_dora else config.network_type,
        rank,
        alpha,
        count / 1e6,
    )
    return network


def _unet_targets(unet: nn.Module, config: TrainConfig) -> list[str]:
    targets = target_module_names(unet, UNET_TARGET_BLOCKS)
    if config.conv_dim is not None:
        targets += target_module_names(unet, UNET_CONV_BLOCKS, convolutions=True)
    return sorted(dict.fromkeys(targets))


def _inject(
    model: nn.Module, targets: list[str], config: TrainConfig
) -> dict[str, tuple[int, float]]:
    """Wrap ``targets`` with the configured adapter; returns each one's (rank, alpha)."""
    if not targets:
        raise ValueError(f"no LoRA target layers found in {type(model).__name__}")
    modules = dict(model.named_modules())
    wide = [name for name in targets if _is_wide_conv(modules[name])]
    model.requires_grad_(False)
    inject_adapter_in_model(adapter_config(config, targets, wide), model, adapter_name=ADAPTER_NAME)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_adapter_parameter(name))
    return {
        name: (config.conv_dim, float(config.conv_alpha))  # type: ignore[arg-type]
        if name in wide
        else (config.network_dim, float(config.network_alpha))
        for name in targets
    }


def adapter_config(
    config: TrainConfig, targets: list[str], wide: list[str]
) -> LoraConfig | LoHaConfig | LoKrConfig:
    """The PEFT config for the network type; 3×3 convs (``wide``) get ``conv_dim``/
    ``conv_alpha`` through PEFT's per-module patterns."""
    # Escaped full names: PEFT reads pattern keys as regular expressions.
    rank_pattern = {re.escape(name): config.conv_dim for name in wide}
    alpha_pattern = {re.escape(name): config.conv_alpha for name in wide}
    args = config.network_arg_values
    common = {
        "r": config.network_dim,
        # Exact full names: a suffix pattern like "to_q" could catch layers kohya skips.
        "target_modules": targets,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
    }
    if config.network_type == "loha":
        return LoHaConfig(
            alpha=config.network_alpha,
            rank_dropout=float(args.get("rank_dropout", 0.0)),
            module_dropout=float(args.get("module_dropout", 0.0)),
            init_weights=True,  # w2_b zero: the network starts as the identity
            **common,
        )
    if config.network_type == "lokr":
        return LoKrConfig(
            alpha=config.network_alpha,
            rank_dropout=float(args.get("rank_dropout", 0.0)),
            module_dropout=float(args.get("module_dropout", 0.0)),
            decompose_factor=int(args.get("factor", -1)),
            init_weights=True,  # w1 zero: the network starts as the identity
            **common,
        )
    return LoraConfig(
        lora_alpha=config.network_alpha,
        lora_dropout=config.network_dropout or 0.0,
        use_dora=config.use_dora,
        init_lora_weights=True,  # A: Kaiming-uniform, B: zeros — kohya's init too.
        **common,
    )

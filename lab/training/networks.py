"""The network kinds a config may ask for, in the spellings kohya and LyCORIS users write.

``networks.lora`` (kohya: LoRA, LoCon with ``conv_dim``) and ``lycoris.kohya`` with
``algo=lora|locon|loha|lokr`` map onto PEFT's LoRA, LoHa and LoKr; DoRA is LyCORIS's
``dora_wd=True``. Anything else is refused by name, never silently trained as LoRA.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# ``network_args`` we implement, in kohya's and LyCORIS's spelling: LoCon (``conv_dim``/
# ``conv_alpha``: the UNet's 3×3 convs too), LyCORIS's ``algo`` and LoKr ``factor``, DoRA
# (``dora_wd``), and the LyCORIS dropouts.
SUPPORTED_NETWORK_ARGS = frozenset(
    {"conv_dim", "conv_alpha", "algo", "dora_wd", "factor", "rank_dropout", "module_dropout"}
)
NETWORK_MODULES = ("networks.lora", "lycoris.kohya")
NETWORK_ALGOS = ("lora", "locon", "loha", "lokr")
# Spellings people bring from kohya and LyCORIS that we know and do not train; each
# names what it is, so the error says more than "unknown".
UNSUPPORTED_NETWORK_MODULES = {
    "networks.dylora": "DyLoRA",
    "networks.oft": "OFT",
    "networks.lora_fa": "LoRA-FA",
    "networks.lora_flux": "FLUX LoRA",
}
UNSUPPORTED_ALGOS = {
    "ia3": "(IA)^3",
    "dylora": "DyLoRA",
    "glora": "GLoRA",
    "full": "full fine-tuning (native)",
    "diag-oft": "diagonal OFT",
    "boft": "BOFT",
}
UNSUPPORTED_NETWORK_ARGS = {
    "use_tucker": "Tucker/CP decomposition of convs",
    "use_cp": "Tucker/CP decomposition of convs",
    "rank_dropout_scale": "rank dropout rescaling",
    "loraplus_lr_ratio": "LoRA+ learning-rate ratios",
    "loraplus_unet_lr_ratio": "LoRA+ learning-rate ratios",
    "loraplus_text_encoder_lr_ratio": "LoRA+ learning-rate ratios",
    "use_scalar": "the trainable LyCORIS scalar",
    "preset": "LyCORIS target presets other than full (kohya's targets are used)",
    "block_dims": "block-wise ranks",
    "block_alphas": "block-wise alphas",
    "down_lr_weight": "block-wise learning rates",
    "mid_lr_weight": "block-wise learning rates",
    "up_lr_weight": "block-wise learning rates",
    "train_norm": "training the norm layers",
    "decompose_both": "LoKr with both factors decomposed",
    "wd_on_output": "DoRA's axis (the magnitude is always per output channel)",
}


# The kohya_ss GUI writes every LyCORIS option into network_args, mostly off
# (``use_tucker=False``); an off value asks for nothing and is dropped. ``preset=full``
# is LyCORIS's default preset; ``bypass_mode`` computes the same output another way.
OFF_NETWORK_ARGS: Mapping[str, tuple[Any, ...]] = {
    "use_tucker": (False,),
    "use_cp": (False,),
    "use_scalar": (False,),
    "train_norm": (False,),
    "decompose_both": (False,),
    "rank_dropout_scale": (False,),
    "bypass_mode": (False, True),
    "preset": ("full",),
    "rank_dropout": (0,),
    "module_dropout": (0,),
    "dora_wd": (False,),
    "loraplus_lr_ratio": (0,),
    "loraplus_unet_lr_ratio": (0,),
    "loraplus_text_encoder_lr_ratio": (0,),
}


def active_network_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """``network_args`` without the options that are off (see ``OFF_NETWORK_ARGS``), and
    without options of an option that is off: ``rank_dropout_scale`` without rank
    dropout, Tucker (``use_tucker``/``use_cp``, for convs only) without ``conv_dim``."""
    active = {k: v for k, v in args.items() if v not in OFF_NETWORK_ARGS.get(k, ())}
    if "rank_dropout" not in active:
        active.pop("rank_dropout_scale", None)
    if not active.get("conv_dim"):
        active.pop("use_tucker", None)
        active.pop("use_cp", None)
    return active


def check_network(module: str, args: Mapping[str, Any]) -> None:
    """Accept the kohya/LyCORIS spellings we train; name anything else precisely."""
    args = active_network_args(args)
    early = str(args.get("algo", "lora")).lower()
    if early in UNSUPPORTED_ALGOS:
        raise ValueError(
            f"network_args algo={early} ({UNSUPPORTED_ALGOS[early]}) is not supported; "
            f"use one of {', '.join(NETWORK_ALGOS)}"
        )
    if module in UNSUPPORTED_NETWORK_MODULES:
        raise ValueError(
            f"network_module {module!r} ({UNSUPPORTED_NETWORK_MODULES[module]}) is not "
            f"supported; use one of {', '.join(NETWORK_MODULES)}"
        )
    if module not in NETWORK_MODULES:
        raise ValueError(
            f"network_module {module!r} is not supported; use one of {', '.join(NETWORK_MODULES)}"
        )
    named = sorted(set(args) & set(UNSUPPORTED_NETWORK_ARGS))
    if named:
        what = "; ".join(f"{k} ({UNSUPPORTED_NETWORK_ARGS[k]})" for k in named)
        raise ValueError(f"network_args not supported: {what}")
    unknown = sorted(set(args) - SUPPORTED_NETWORK_ARGS)
    if unknown:
        raise ValueError(
            f"network_args {unknown} are not supported (supported: "
            f"{', '.join(sorted(SUPPORTED_NETWORK_ARGS))})"
        )
    algo = str(args.get("algo", "lora")).lower()
    if "algo" in args and module != "lycoris.kohya":
        raise ValueError(f"network_args algo={algo} needs network_module = 'lycoris.kohya'")
    if algo in UNSUPPORTED_ALGOS:
        raise ValueError(
            f"network_args algo={algo} ({UNSUPPORTED_ALGOS[algo]}) is not supported; "
            f"use one of {', '.join(NETWORK_ALGOS)}"
        )
    if algo not in NETWORK_ALGOS:
        raise ValueError(f"network_args algo={algo!r} is unknown; use one of {NETWORK_ALGOS}")
    if args.get("dora_wd") and algo not in ("lora", "locon"):
        raise ValueError(f"dora_wd=True works with algo=lora or locon, not {algo}")
    if "factor" in args and algo != "lokr":
        raise ValueError("network_args factor is a LoKr option (algo=lokr)")
    if "conv_alpha" in args and "conv_dim" not in args:
        raise ValueError("network_args: conv_alpha needs conv_dim")
    for key in ("rank_dropout", "module_dropout"):
        if key in args and algo not in ("loha", "lokr"):
            raise ValueError(
                f"network_args {key} is not supported for LoRA/LoCon; use network_dropout "
                f"(dropout on the LoRA input) or algo=loha|lokr, which take {key}"
            )
        if key in args and not 0 <= float(args[key]) < 1:
            raise ValueError(f"network_args {key} must be in [0, 1)")

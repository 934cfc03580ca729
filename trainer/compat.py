"""A plain LoRA fitted to a DoRA network's exact weight change, for apps that apply DoRA
files wrongly (see :mod:`lab.apps`).

Per DoRA module the trained weight is W' = m · (W + ΔW_lora) / ‖W + ΔW_lora‖ (one norm
per output channel), so W' − W includes the magnitude rescale of all of W and is in
general of full rank. Its best rank-r approximation in the Frobenius norm is the
truncated SVD (Eckart–Young): ΔW ≈ U_r S_r V_rᵀ, written as ``lora_up`` = U_r √S_r and
``lora_down`` = √S_r V_rᵀ with ``alpha`` = r, which every app applies the same way
(randomized SVD for wide layers, to the same error within 1 %). The relative error
‖ΔW − ΔW_r‖ / ‖ΔW‖ over all modules goes into the file's metadata.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import save_file

from lab.apps import compat_filename
from lab.training.config import TrainConfig
from trainer.formats import SD15_PREFIXES, file_naming, kohya_module_name
from trainer.models import BaseModel
from trainer.network import ADAPTER_NAME, LoraNetwork
from trainer.saving import SAVE_DTYPES, RunInfo, addnet_hashes, save_lora
from trainer.sgm import SgmLayout

logger = logging.getLogger(__name__)

__all__ = [
    "CompatFit",
    "compat_for_apps",
    "dora_weight_changes",
    "fit_low_rank",
    "save_dora_compat",
    "save_network",
]


@dataclass(frozen=True)
class CompatFit:
    path: Path
    rank: int
    relative_error: float
    """‖ΔW − ΔW_r‖ / ‖ΔW‖ over every module together (Frobenius norms)."""
    worst_module_error: float
    modules: int


def dora_weight_changes(network: LoraNetwork) -> Iterator[tuple[tuple[str, str], torch.Tensor]]:
    """W' − W (float32, on the layer's device) of every DoRA layer, keyed by (component,
    module path), as PEFT computes W' when it merges the layer (magnitude rescale
    included). One at a time: all of SDXL's would not fit in memory together."""
    with torch.no_grad():
        for component, model in network.components().items():
            for path, layer in model.named_modules():
                if not isinstance(layer, LoraLayer) or not layer.use_dora.get(ADAPTER_NAME):
                    continue
                base = layer.get_base_layer()
                original = base.weight.detach().clone()
                layer.merge(adapter_names=[ADAPTER_NAME])
                delta = base.weight.detach().float() - original.float()
                layer.unmerge()
                base.weight.copy_(original)  # unmerge is exact only up to rounding
                yield (component, path), delta


def fit_low_rank(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(``lora_down``, ``lora_up``, squared residual ‖ΔW − up·down‖²) of the rank-``rank``
    truncated-SVD fit of ``delta`` [out, in(, k, k)]; conv fits get a [r, in, k, k] down
    and [out, r, 1, 1] up, kohya's LoCon layout.

    Wide layers use the randomized SVD (Halko et al. 2011, "Finding structure with
    randomness", arXiv:0909.4061) with power iterations, which reaches the truncated
    SVD's error to a fraction of a percent in milliseconds where a full SVD of an SDXL
    feed-forward layer takes seconds; its random draws leave the training RNG as it was.
    """
    matrix = delta.flatten(1).float()
    r = min(rank, *matrix.shape)
    if min(matrix.shape) <= 2 * (r + _OVERSAMPLE):
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        v = vh.mT
    else:
        with torch.random.fork_rng(devices=[matrix.device] if matrix.is_cuda else []):
            torch.manual_seed(0)
            u, s, v = torch.svd_lowrank(matrix, q=r + _OVERSAMPLE, niter=_POWER_ITERATIONS)
    root = s[:r].sqrt()
    up = u[:, :r] * root
    down = (v[:, :r] * root).mT
    residual = float((matrix - up @ down).double().pow(2).sum())
    if delta.dim() == 4:
        return down.reshape(r, *delta.shape[1:]), up.reshape(*up.shape, 1, 1), residual
    return down, up, residual


_OVERSAMPLE = 8
_POWER_ITERATIONS = 4


def save_dora_compat(
    dora_path: Path,
    network: LoraNetwork,
    *,
    rank: int | None = None,
    precision: str = "float",
    prefixes: Mapping[str, str] = SD15_PREFIXES,
    unet_layout: SgmLayout | None = None,
) -> CompatFit:
    """Write the plain-LoRA fit of ``network`` (a DoRA network) beside ``dora_path``,
    with its metadata (``ss_network_*`` describing the fit, the fit's error) and return
    what was written. ``rank`` defaults to each module's DoRA rank (``conv_dim`` for the
    3×3 convs of a LoCon network)."""
    dtype = SAVE_DTYPES[precision]
    tensors: dict[str, torch.Tensor] = {}
    residual = total = 0.0
    worst = 0.0
    modules = 0
    for (component, path), delta in dora_weight_changes(network):
        modules += 1
        down, up, squared = fit_low_rank(delta, rank or network.ranks[component][path])
        energy = float(delta.double().pow(2).sum())
        residual, total = residual + squared, total + energy
        worst = max(worst, math.sqrt(squared / energy) if energy else 0.0)
        name = kohya_module_name(component, path, prefixes, unet_layout=unet_layout)
        tensors[f"{name}.lora_down.weight"] = down.to(dtype).contiguous().cpu()
        tensors[f"{name}.lora_up.weight"] = up.to(dtype).contiguous().cpu()
        # alpha = rank of this fit: the scale alpha / r is 1, the fit is applied as is.
        tensors[f"{name}.alpha"] = torch.tensor(float(down.shape[0]), dtype=dtype)
    if not tensors:
        raise ValueError(f"{dora_path.name}: the network has no DoRA layers to fit")
    error = math.sqrt(residual / total) if total else 0.0
    with safe_open(str(dora_path), "pt") as handle:
        metadata = dict(handle.metadata() or {})
    dora_args = json.loads(metadata.get("ss_network_args", "{}"))
    args = {}
    if "conv_dim" in dora_args:  # networks.lora's LoCon keys; alpha = rank throughout
        args["conv_dim"] = args["conv_alpha"] = str(rank or dora_args["conv_dim"])
    dim = rank or network.rank
    path = dora_path.with_name(compat_filename(dora_path.name))
    metadata.update(
        {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(dim),
            "ss_network_alpha": repr(float(dim)),
            "ss_network_args": json.dumps(args),
            "ss_output_name": path.stem,
            "modelspec.title": path.stem,
            "loralab_dora_compat_of": dora_path.name,
            "loralab_dora_compat_relative_error": f"{error:.6g}",
            "loralab_dora_compat_worst_module_error": f"{worst:.6g}",
        }
    )
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = addnet_hashes(tensors, metadata)
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(path)
    logger.info(
        "saved %s: rank-%d LoRA fit of the DoRA change, relative error %.4f (worst module %.4f)",
        path.name,
        dim,
        error,
        worst,
    )
    return CompatFit(path, dim, error, worst, modules)


def compat_for_apps(
    path: Path, network: LoraNetwork, config: TrainConfig, naming: Mapping[str, Any]
) -> CompatFit | None:
    """After a DoRA file is saved: its plain-LoRA fit (``dora_compat_rank``; 0 = none)."""
    if not config.use_dora or config.dora_compat_rank == 0:
        return None
    return save_dora_compat(
        path, network, rank=config.dora_compat_rank, precision=config.save_precision, **naming
    )


def save_network(
    path: Path,
    network: LoraNetwork,
    info: RunInfo,
    config: TrainConfig,
    base: BaseModel,
    epoch: int,
    step: int,
) -> Path | None:
    """Save the network as a kohya file at ``path`` (SDXL in the original UNet's names)
    and, for DoRA, its plain-LoRA fit beside it; returns the fit's path."""
    naming = file_naming(base.unet.config, sdxl=base.is_sdxl)
    save_lora(
        path,
        network.state_dicts(),
        network.alphas,
        info,
        epoch=epoch,
        step=step,
        precision=config.save_precision,
        ranks=network.ranks,
        **naming,
    )
    fit = compat_for_apps(path, network, config, naming)
    return fit.path if fit else None

"""Writing LoRA files in kohya's format, which A1111, Forge, ComfyUI and diffusers load.

Key names per network type are in :mod:`trainer.formats`. diffusers'
``convert_state_dict_to_kohya`` is not used: it writes ``alpha = rank`` whatever alpha
was trained with (which silently rescales the LoRA by rank/alpha when loaded) and names
the SD1.5 text encoder ``lora_te1_``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from trainer.formats import SD15_PREFIXES, kohya_module_name, kohya_state_dict
from trainer.sgm import SgmLayout

__all__ = ["RunInfo", "build_metadata", "kohya_module_name", "save_lora"]

logger = logging.getLogger(__name__)

SAVE_DTYPES: Mapping[str, torch.dtype] = {
    "float": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


MODELSPEC_VERSION = "1.0.1"
SGM_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"


def _version() -> str:
    try:
        return importlib.metadata.version("loralab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def addnet_hashes(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> tuple[str, str]:
    """``(sshs_model_hash, sshs_legacy_hash)`` as kohya and sd-webui-additional-networks
    compute them: SHA-256 of the file's tensor bytes (everything after the header) when
    saved with only the ``ss_*`` metadata, and the legacy 8-hex hash of a fixed window."""
    training_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    blob = save(dict(tensors), training_only)
    header_len = int.from_bytes(blob[:8], "little")
    model_hash = hashlib.sha256(blob[8 + header_len :]).hexdigest()
    window = io.BytesIO(blob)
    window.seek(0x100000)
    legacy_hash = hashlib.sha256(window.read(0x10000)).hexdigest()[:8]
    return model_hash, legacy_hash


@dataclass(frozen=True)
class RunInfo:
    """Facts about the run that go into every saved file's metadata."""

    base_model_name: str
    base_model_version: str  # "sd_v1"
    prediction_type: str
    resolution: tuple[int, int]
    network_dim: int
    network_alpha: float
    network_args: dict[str, str]
    network_dropout: float | None
    train_text_encoder: bool
    output_name: str
    clip_skip: int | None
    num_train_images: int
    num_reg_images: int
    num_batches_per_epoch: int
    num_epochs: int
    max_train_steps: int
    batch_size: int
    learning_rate: float
    unet_lr: float
    text_encoder_lr: float | None
    optimizer: str
    lr_scheduler: str
    lr_warmup_steps: int
    mixed_precision: str
    seed: int
    tag_frequency: dict[str, dict[str, int]]
    dataset_dirs: dict[str, dict[str, int]]
    reg_dataset_dirs: dict[str, dict[str, int]]
    bucket_info: dict[str, object]
    options: dict[str, str]
    """Further ``ss_*`` values (loss and caption options), already strings."""
    training_started_at: float
    session_id: str
    comment: str | None = None
    network_module: str = "networks.lora"
    architecture: str = "stable-diffusion-v1"
    """``modelspec.architecture`` without ``/lora`` (SDXL: ``stable-diffusion-xl-v1-base``)."""


def build_metadata(info: RunInfo, *, epoch: int, step: int, title: str) -> dict[str, str]:
    """The ``ss_*`` and ``modelspec.*`` header A1111, Civitai and kohya tools read."""
    width, height = info.resolution
    v_pred = info.prediction_type == "v_prediction"
    sdxl = info.base_model_version.startswith("sdxl")
    metadata = {
        "ss_session_id": info.session_id,
        "ss_training_started_at": repr(info.training_started_at),
        "ss_training_finished_at": repr(time.time()),
        "ss_output_name": info.output_name,
        "ss_sd_model_name": info.base_model_name,
        "ss_base_model_version": info.base_model_version,
        "ss_v2": "False",
        "ss_network_module": info.network_module,
        "ss_network_dim": str(info.network_dim),
        "ss_network_alpha": _number(info.network_alpha),
        "ss_network_dropout": str(info.network_dropout),
        "ss_network_args": json.dumps(info.network_args),
        "ss_network_train_unet_only": str(not info.train_text_encoder),
        "ss_resolution": f"({width}, {height})",
        "ss_clip_skip": str(info.clip_skip),
        "ss_num_train_images": str(info.num_train_images),
        "ss_num_reg_images": str(info.num_reg_images),
        "ss_num_batches_per_epoch": str(info.num_batches_per_epoch),
        "ss_num_epochs": str(info.num_epochs),
        "ss_epoch": str(epoch),
        "ss_steps": str(step),
        "ss_max_train_steps": str(info.max_train_steps),
        "ss_batch_size_per_device": str(info.batch_size),
        "ss_total_batch_size": str(info.batch_size),
        "ss_learning_rate": str(info.learning_rate),
        "ss_unet_lr": str(info.unet_lr),
        "ss_text_encoder_lr": str(info.text_encoder_lr),
        "ss_optimizer": info.optimizer,
        "ss_lr_scheduler": info.lr_scheduler,
        "ss_lr_warmup_steps": str(info.lr_warmup_steps),
        "ss_mixed_precision": info.mixed_precision,
        "ss_seed": str(info.seed),
        "ss_v_parameterization": str(v_pred),
        "ss_tag_frequency": json.dumps(info.tag_frequency),
        "ss_dataset_dirs": json.dumps(info.dataset_dirs),
        "ss_reg_dataset_dirs": json.dumps(info.reg_dataset_dirs),
        "ss_bucket_info": json.dumps(info.bucket_info),
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": f"{info.architecture}/lora",
        # kohya: SDXL LoRAs are for Stability's (original-layout) UNet, SD1.5 ones diffusers'.
        "modelspec.implementation": SGM_IMPLEMENTATION if sdxl else "diffusers",
        "modelspec.implementation_version": f"loralab/{_version()}",
        "modelspec.title": title,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "modelspec.prediction_type": "v" if v_pred else "epsilon",
    }
    metadata["ss_training_comment"] = str(info.comment)
    if info.clip_skip is not None:
        metadata["modelspec.encoder_layer"] = str(info.clip_skip)
    metadata.update(info.options)
    return metadata


def save_lora(
    path: Path,
    peft_states: Mapping[str, Mapping[str, torch.Tensor]],
    alphas: Mapping[str, Mapping[str, float]],
    info: RunInfo,
    *,
    epoch: int,
    step: int,
    precision: str,
    ranks: Mapping[str, Mapping[str, int]] | None = None,
    prefixes: Mapping[str, str] = SD15_PREFIXES,
    unet_layout: SgmLayout | None = None,
) -> Path:
    """Write one kohya-format LoRA file (atomically) and return its path; SDXL files
    pass ``unet_layout`` so their UNet keys use the original UNet's names."""
    ranks = ranks or {part: {m: 0 for m in values} for part, values in alphas.items()}
    tensors = kohya_state_dict(
        peft_states,
        alphas,
        ranks,
        prefixes=prefixes,
        dtype=SAVE_DTYPES[precision],
        unet_layout=unet_layout,
    )
    metadata = build_metadata(info, epoch=epoch, step=step, title=path.stem)
    metadata["sshs_model_hash"], metadata["sshs_legacy_hash"] = addnet_hashes(tensors, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(path)
    logger.info("saved %s (epoch %d, step %d, %d tensors)", path, epoch, step, len(tensors))
    return path


def _number(value: float) -> str:
    """``32.0`` → ``"32.0"`` as kohya writes floats; keeps the exact configured value."""
    return repr(float(value))

"""Loading the base model: a diffusers folder, a single-file checkpoint, or a hub id.

Everything is loaded with ``local_files_only`` whenever the model is on disk, so a
local run never reaches the hub. Pickle checkpoints execute code when unpickled; they
are refused unless the user opts in with ``allow_unsafe_checkpoint``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiffusionPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors import safe_open
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from lab.training.config import TrainConfig
from trainer.errors import ConfigError, TrainerError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFE_SINGLE_FILE_SUFFIXES = (".safetensors",)
# Where from_single_file finds SD1.5's component configs and tokenizer when the user
# names no local config folder: the hub id, read from the local HF cache only.
DEFAULT_SD15_CONFIG_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_SDXL_CONFIG_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
# A key only SDXL single-file checkpoints have (the second text encoder, OpenCLIP bigG).
SDXL_CHECKPOINT_KEY_PREFIX = "conditioner.embedders.1."


@dataclass
class BaseModel:
    """The frozen parts of SD1.5 the trainer needs, plus what the metadata reports."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    noise_scheduler: DDPMScheduler
    """The training noise schedule (DDPM with the base model's betas)."""
    sample_scheduler_config: dict[str, Any]
    """The base model's own inference scheduler config, for samples."""
    name: str
    """``ss_sd_model_name``: the file or folder name of the base."""
    text_encoder_2: CLIPTextModelWithProjection | None = None
    """SDXL's second text encoder (OpenCLIP bigG with projection); None for SD1.5."""
    tokenizer_2: CLIPTokenizer | None = None
    force_zeros_for_empty_prompt: bool = False
    """SDXL pipelines use zeros, not the encoded empty string, for an empty negative."""

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def prediction_type(self) -> str:
        return str(self.noise_scheduler.config.prediction_type)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_base_model(config: TrainConfig) -> BaseModel:
    """Load the base named by ``pretrained_model_name_or_path`` on the CPU, frozen."""
    source = config.pretrained_model_name_or_path
    path = Path(source)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not config.allow_unsafe_checkpoint:
            raise UnsafeCheckpointError(
                f"{path.name} is a pickle checkpoint, which can run arbitrary code when "
                "loaded; convert it to .safetensors, or pass --allow-unsafe-checkpoint "
                "(allow_unsafe_checkpoint = true) if you trust its source"
            )
        pipe = _from_single_file(path, config, sdxl=False)
    elif path.suffix.lower() in SAFE_SINGLE_FILE_SUFFIXES:
        pipe = _from_single_file(path, config, sdxl=_is_sdxl_checkpoint(path))
    elif path.is_dir():
        if (path / "text_encoder_2").exists():
            pipe = StableDiffusionXLPipeline.from_pretrained(path, local_files_only=True)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                path, local_files_only=True, safety_checker=None, requires_safety_checker=False
            )
    elif path.exists() or source.count("/") != 1:
        raise ConfigError(
            f"pretrained_model_name_or_path {source!r} is neither a diffusers folder, a "
            ".safetensors file nor a hub id (owner/name)"
        )
    else:
        kind = DiffusionPipeline.load_config(source).get("_class_name", "")
        if kind == "StableDiffusionXLPipeline":
            pipe = StableDiffusionXLPipeline.from_pretrained(source)
        elif kind == "StableDiffusionPipeline":
            pipe = StableDiffusionPipeline.from_pretrained(
                source, safety_checker=None, requires_safety_checker=False
            )
        else:
            raise TrainerError(f"{source} is a {kind or 'unknown'} model, not an SD1.5/SDXL base")
    return _assemble(pipe, config, name=path.name)


def _is_sdxl_checkpoint(path: Path) -> bool:
    if not path.is_file():
        return False
    with safe_open(str(path), "pt") as handle:
        return any(k.startswith(SDXL_CHECKPOINT_KEY_PREFIX) for k in handle.keys())  # noqa: SIM118


def _from_single_file(
    path: Path, config: TrainConfig, *, sdxl: bool
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    default = DEFAULT_SDXL_CONFIG_REPO if sdxl else DEFAULT_SD15_CONFIG_REPO
    components = str(config.single_file_config or default)
    if sdxl:
        try:
            return StableDiffusionXLPipeline.from_single_file(
                str(path), config=components, local_files_only=True
            )
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"could not load the SDXL checkpoint {path.name} with the component configs "
                f"from {components}: {error}. Set single_file_config to a local diffusers "
                "SDXL folder"
            ) from error
    try:
        return StableDiffusionPipeline.from_single_file(
            str(path),
            config=components,
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"could not load {path.name} with the component configs from {components}: "
            f"{error}. Set single_file_config to a local diffusers SD1.5 folder (its "
            "model_index.json, component configs and tokenizer are enough)"
        ) from error


def _assemble(
    pipe: StableDiffusionPipeline | StableDiffusionXLPipeline, config: TrainConfig, *, name: str
) -> BaseModel:
    prediction_type = config.prediction_type or pipe.scheduler.config.get(
        "prediction_type", "epsilon"
    )
    if config.v_parameterization:
        prediction_type = "v_prediction"
    noise_scheduler = DDPMScheduler.from_config(
        pipe.scheduler.config,
        prediction_type=prediction_type,
        # Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed".
        rescale_betas_zero_snr=config.zero_terminal_snr,
    )
    text_encoder_2 = getattr(pipe, "text_encoder_2", None)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, text_encoder_2):
        if module is not None:
            module.requires_grad_(False)
            module.eval()
    logger.info(
        "loaded %s base %s (prediction_type=%s, unet %.1fM params)",
        "SDXL" if text_encoder_2 is not None else "SD1.5",
        name,
        prediction_type,
        sum(p.numel() for p in pipe.unet.parameters()) / 1e6,
    )
    return BaseModel(
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        noise_scheduler=noise_scheduler,
        sample_scheduler_config=dict(pipe.scheduler.config),
        name=name,
        text_encoder_2=text_encoder_2,
        tokenizer_2=getattr(pipe, "tokenizer_2", None),
        force_zeros_for_empty_prompt=bool(
            getattr(pipe.config, "force_zeros_for_empty_prompt", False)
        ),
    )


def vae_fingerprint(vae: AutoencoderKL) -> str:
    """A short digest identifying the VAE's weights, part of every latent-cache key.

    Hashing per-tensor sums (not the raw bytes) is fast even for a full VAE and still
    changes whenever a different VAE is swapped in.
    """
    import hashlib

    digest = hashlib.sha256(repr(sorted(vae.config.items())).encode())
    with torch.no_grad():
        for key, tensor in sorted(vae.state_dict().items()):
            digest.update(
                f"{key}:{tuple(tensor.shape)}:{tensor.double().sum().item():.10e}".encode()
            )
    return digest.hexdigest()[:16]

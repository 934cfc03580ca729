"""The training config: kohya sd-scripts' TOML keys in one frozen, versioned model.

A kohya config file groups its keys in sections (``[model_arguments]``,
``[training_arguments]``…); we flatten them, so both that layout and a flat file work.
A kohya-style dataset definition (``[[datasets]]`` with ``[[datasets.subsets]]``) may sit
in the same file. A misspelt or unsupported key is an error naming it, with the key to
use instead where we know one: silently ignoring ``learning_rte`` costs a night of GPU.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lab.training.datasets import (
    DatasetSection,
    SubsetConfig,
    parse_resolution,
    read_dataset_config,
    with_general,
)
from lab.training.errors import ConfigError
from lab.training.keys import check_keys
from lab.training.kohya import translate_kohya_keys
from lab.training.networks import active_network_args, check_network
from lab.training.presets import preset_values
from lab.training.values import is_torch_schedule, parse_key_values, parse_override

CONFIG_VERSION = 1
KOHYA_DEFAULT_STEPS = 1600

NetworkType = Literal["lora", "loha", "lokr"]
OptimizerName = Literal[
    "AdamW", "AdamW8bit", "Adafactor", "Lion", "Prodigy", "DAdaptAdam", "DAdaptation"
]
SchedulerName = Literal[
    "constant",
    "constant_with_warmup",
    "cosine",
    "cosine_with_restarts",
    "linear",
    "polynomial",
    "adafactor",
]
LossType = Literal["l1", "l2", "huber", "smooth_l1"]

__all__ = [
    "DatasetSection",
    "SubsetConfig",
    "TrainConfig",
    "build_config",
    "load_config",
    "parse_key_values",
    "parse_override",
]


class TrainConfig(BaseModel):
    """Every option of a run; names follow kohya sd-scripts wherever it has one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config_version: int = CONFIG_VERSION

    # -- base model ---------------------------------------------------------------------
    pretrained_model_name_or_path: str
    v2: bool = False
    v_parameterization: bool = False
    prediction_type: Literal["epsilon", "v_prediction"] | None = None
    """None: the base model's scheduler config decides (``v_parameterization`` forces v)."""
    single_file_config: Path | None = None
    """Diffusers config folder for a single-file checkpoint; default: the bundled SD1.5 one."""
    allow_unsafe_checkpoint: bool = False

    # -- dataset ------------------------------------------------------------------------
    train_data_dir: Path | None = None
    reg_data_dir: Path | None = None
    datasets: tuple[DatasetSection, ...] = ()
    dataset_config: Path | None = None
    """A separate kohya dataset config file ([general], [[datasets]]); read into datasets."""
    resolution: tuple[int, int] = (512, 512)
    """kohya requires it; a file without it trains at 512×512."""
    enable_bucket: bool = False
    min_bucket_reso: int = Field(256, gt=0)
    max_bucket_reso: int = Field(1024, gt=0)
    bucket_reso_steps: int = Field(64, gt=0)
    bucket_no_upscale: bool = False
    caption_extension: str = ".caption"
    shuffle_caption: bool = False
    keep_tokens: int = Field(0, ge=0)
    keep_tokens_separator: str = ""
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    caption_dropout_rate: float = Field(0.0, ge=0, le=1)
    caption_tag_dropout_rate: float = Field(0.0, ge=0, le=1)
    flip_aug: bool = False
    prior_loss_weight: float = Field(1.0, ge=0)
    cache_latents: bool = True
    cache_latents_to_disk: bool = False
    latent_cache_dir: Path | None = None
    """Disk latent cache folder; default ``<output_dir>/.latent_cache``."""
    cache_text_encoder_outputs: bool = True
    """Encode each caption once when the text encoder is frozen and captions are static."""

    # -- network ------------------------------------------------------------------------
    network_module: str = "networks.lora"
    """``networks.lora`` (LoRA, LoCon with ``conv_dim``) or ``lycoris.kohya`` with
    ``algo=lora|locon|loha|lokr``; DoRA is ``dora_wd=True`` on LoRA/LoCon."""
    network_dim: int = Field(4, ge=1)
    network_alpha: float = Field(1.0, gt=0)
    """kohya's default 1: the LoRA is scaled by alpha / network_dim."""
    network_dropout: float | None = Field(None, ge=0, lt=1)
    network_args: tuple[str, ...] = ()
    network_train_unet_only: bool = False
    scale_weight_norms: float | None = Field(None, gt=0)
    """Max-norm regularisation: scale down any module whose ΔW norm exceeds this (kohya)."""

    # -- optimisation -------------------------------------------------------------------
    output_dir: Path
    output_name: str = "last"
    train_batch_size: int = Field(1, ge=1)
    max_train_epochs: int | None = Field(None, ge=1)
    max_train_steps: int | None = Field(KOHYA_DEFAULT_STEPS, ge=1)
    """kohya's default: 1600 steps; max_train_epochs, when set, wins."""
    learning_rate: float = Field(2e-6, gt=0)
    unet_lr: float | None = Field(None, gt=0)
    text_encoder_lr: float | tuple[float, ...] | None = None
    """One value for every text encoder, or kohya's list: one per encoder (SDXL: two)."""
    optimizer_type: OptimizerName = "AdamW"
    optimizer_args: tuple[str, ...] = ()
    lr_scheduler: SchedulerName = "constant"
    lr_warmup_steps: float = Field(0, ge=0)
    """Steps, or a fraction of the total steps when below 1 (``0.1`` = 10 %)."""
    lr_scheduler_num_cycles: int = Field(1, ge=1)
    lr_scheduler_power: float = 1.0
    lr_scheduler_type: str | None = None
    """A ``torch.optim.lr_scheduler`` class (e.g. ``CosineAnnealingLR``) built with
    lr_scheduler_args, instead of lr_scheduler (kohya's custom schedule)."""
    lr_scheduler_args: tuple[str, ...] = ()
    """``key=value`` strings passed to the schedule (e.g. ``["min_lr_rate=0.1"]``)."""
    max_grad_norm: float = Field(1.0, ge=0)
    gradient_accumulation_steps: int = Field(1, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    save_precision: Literal["float", "fp16", "bf16"] = "fp16"
    gradient_checkpointing: bool = False
    torch_compile: bool = False
    """Regional ``torch.compile`` of the UNet's repeated blocks."""
    memory_budget_gb: float | None = Field(None, gt=0)
    """Refuse to start when the estimated peak exceeds this (default: the GPU's memory)."""
    seed: int | None = None

    # -- loss ---------------------------------------------------------------------------
    loss_type: LossType = "l2"
    """sd-scripts' loss: ``l2`` (MSE), ``l1``, ``huber`` or ``smooth_l1``."""
    huber_schedule: Literal["constant", "exponential", "snr"] = "snr"
    """How the Huber threshold varies with the timestep (sd-scripts' schedules)."""
    huber_c: float = Field(0.1, gt=0, le=1)
    huber_scale: float = Field(1.0, gt=0)
    min_timestep: int | None = Field(None, ge=0, le=1000)
    """Train on timesteps ≥ this (default 0)."""
    max_timestep: int | None = Field(None, ge=1, le=1000)
    """Train on timesteps < this (default: the scheduler's 1000)."""
    min_snr_gamma: float | None = Field(None, gt=0)
    debiased_estimation_loss: bool = False
    noise_offset: float | None = Field(None, ge=0)
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float | None = None
    """Adds ``adaptive_noise_scale × |mean latent|`` per channel to noise_offset (kohya)."""
    multires_noise_iterations: int | None = Field(None, ge=1)
    multires_noise_discount: float = Field(0.3, gt=0, le=1)
    zero_terminal_snr: bool = False
    clip_skip: int | None = Field(None, ge=1)
    max_token_length: Literal[75, 150, 225] | None = None
    """Caption length in tokens: 75 (one CLIP window), or kohya's 150/225 (2–3 windows)."""

    # -- saving, resume, samples --------------------------------------------------------
    save_every_n_epochs: int | None = Field(None, ge=1)
    save_last_n_epochs: int | None = Field(None, ge=1)
    save_every_n_steps: int | None = Field(None, ge=1)
    """Also save ``<name>-step<N>.safetensors`` every N steps (kohya)."""
    save_last_n_steps: int | None = Field(None, ge=1)
    """Keep only the step saves of the last N steps."""
    save_state: bool = False
    save_state_on_train_end: bool = False
    resume: Path | None = None
    sample_prompts: Path | None = None
    sample_every_n_epochs: int | None = Field(None, ge=1)
    sample_sampler: Literal["ddim", "euler", "euler_a", "dpmsolver++"] = "ddim"
    sample_weights: tuple[float, ...] = ()
    """LoRA weights for a grid at the end of training (columns), e.g. ``[0, 0.4, 0.8, 1.2]``."""
    training_comment: str | None = None
    dora_compat_rank: int | None = Field(None, ge=0)
    """DoRA only: rank of the plain-LoRA fit saved beside each DoRA file
    (``…-lora-compat.safetensors``, for apps that apply DoRA wrongly); default each
    module's DoRA rank; 0 writes none."""

    @field_validator("resolution", mode="before")
    @classmethod
    def _parse_resolution(cls, value: Any) -> Any:
        """kohya writes ``resolution = "512,512"`` or ``"512"``; accept ints and pairs too."""
        return parse_resolution(value)

    @field_validator("text_encoder_lr", mode="before")
    @classmethod
    def _text_encoder_lrs(cls, value: Any) -> Any:
        """kohya's ``text_encoder_lr = [5e-5, 5e-5]``; one value in a list means all."""
        if isinstance(value, list | tuple):
            if not value:
                return None
            if any(not isinstance(v, int | float) or v < 0 for v in value):
                raise ValueError("text_encoder_lr values must be numbers ≥ 0")
            return float(value[0]) if len(value) == 1 else tuple(float(v) for v in value)
        if isinstance(value, int | float) and value < 0:
            raise ValueError("text_encoder_lr must be ≥ 0")
        return value

    @field_validator("optimizer_args", "network_args", "lr_scheduler_args", mode="before")
    @classmethod
    def _args_list(cls, value: Any) -> Any:
        """kohya's command line form: one string of space-separated ``key=value`` items."""
        return value.replace('"', "").split() if isinstance(value, str) else value

    @field_validator("max_token_length", mode="before")
    @classmethod
    def _token_length(cls, value: Any) -> Any:
        """kohya: 75 (or unset) is one window; the GUI writes it as a string too."""
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        return None if value in (75, None) else value

    @field_validator("optimizer_type", mode="before")
    @classmethod
    def _optimizer_case(cls, value: Any) -> Any:
        """kohya compares optimizer names case-insensitively (``adamw8bit``, ``prodigy``)."""
        if isinstance(value, str):
            names = {name.lower(): name for name in get_args(OptimizerName)}
            return names.get(value.lower(), value)
        return value

    @field_validator("caption_extension")
    @classmethod
    def _dot_extension(cls, value: str) -> str:
        return value if value.startswith(".") else f".{value}"

    @model_validator(mode="after")
    def _check_consistency(self) -> TrainConfig:
        if self.config_version != CONFIG_VERSION:
            raise ValueError(
                f"config_version {self.config_version} is not supported (expected {CONFIG_VERSION})"
            )
        if self.train_data_dir is None and not self.datasets:
            raise ValueError("set train_data_dir or a [[datasets]] section")
        if self.adaptive_noise_scale is not None and not self.noise_offset:
            raise ValueError("adaptive_noise_scale needs noise_offset (as in kohya)")
        low, high = self.min_timestep or 0, self.max_timestep or 1000
        if low >= high:
            raise ValueError(f"min_timestep ({low}) must be below max_timestep ({high})")
        if self.lr_scheduler_type and not is_torch_schedule(self.lr_scheduler_type):
            raise ValueError(
                f"lr_scheduler_type {self.lr_scheduler_type!r} is not a torch.optim.lr_scheduler "
                "class (e.g. CosineAnnealingLR); or use lr_scheduler"
            )
        if self.scale_weight_norms and self.use_dora:
            raise ValueError("scale_weight_norms does not apply to DoRA; use max_grad_norm")
        if self.lr_scheduler == "adafactor" and self.optimizer_type != "Adafactor":
            raise ValueError("lr_scheduler = 'adafactor' needs optimizer_type = 'Adafactor'")
        if self.v2:
            raise ValueError("v2 (SD2.x) bases are not supported by this trainer version yet")
        step = self.bucket_reso_steps
        if self.enable_bucket and step % 8:
            raise ValueError(f"bucket_reso_steps must be a multiple of 8, got {step}")
        check_network(self.network_module, parse_key_values(self.network_args, "network_args"))
        if self.network_dropout and self.network_type != "lora":
            raise ValueError(
                f"network_dropout is a LoRA option; for {self.network_type} use network_args "
                "rank_dropout=… or module_dropout=…"
            )
        return self

    # -- resolved values ----------------------------------------------------------------

    @property
    def conv_dim(self) -> int | None:
        """LoCon: rank of the LoRA on 3×3 convolutions (kohya's ``conv_dim`` network arg)."""
        value = parse_key_values(self.network_args, "network_args").get("conv_dim")
        return None if value is None else int(value)

    @property
    def conv_alpha(self) -> float | None:
        """LoCon alpha; kohya's default is 1 when only ``conv_dim`` is given."""
        args = parse_key_values(self.network_args, "network_args")
        if "conv_alpha" in args:
            return float(args["conv_alpha"])
        return 1.0 if "conv_dim" in args else None

    @property
    def network_type(self) -> NetworkType:
        """The adapter kind: ``lora`` (also LoCon and DoRA), ``loha`` or ``lokr``."""
        algo = str(parse_key_values(self.network_args, "network_args").get("algo", "lora"))
        return "lora" if algo in ("lora", "locon") else algo  # type: ignore[return-value]

    @property
    def use_dora(self) -> bool:
        """DoRA (Liu et al. 2024, arXiv:2402.09353): LyCORIS's ``dora_wd=True``."""
        return bool(parse_key_values(self.network_args, "network_args").get("dora_wd", False))

    @property
    def network_arg_values(self) -> dict[str, Any]:
        """``network_args`` as values, without the LyCORIS options that are off."""
        return active_network_args(parse_key_values(self.network_args, "network_args"))

    @property
    def effective_unet_lr(self) -> float:
        return self.unet_lr if self.unet_lr is not None else self.learning_rate

    @property
    def effective_text_encoder_lr(self) -> float:
        """The first text encoder's learning rate."""
        return self.text_encoder_lrs[0]

    @property
    def text_encoder_lrs(self) -> tuple[float, float]:
        """(TE1, TE2) learning rates: kohya's list gives one per encoder, a single value
        (or none: learning_rate) applies to both."""
        value = self.text_encoder_lr
        if value is None:
            return (self.learning_rate, self.learning_rate)
        if isinstance(value, tuple):
            return (value[0], value[1] if len(value) > 1 else value[0])
        return (value, value)

    @property
    def train_text_encoder(self) -> bool:
        return not self.network_train_unet_only and max(self.text_encoder_lrs) > 0

    def optimizer_kwargs(self) -> dict[str, Any]:
        """``optimizer_args`` (kohya's ``key=value`` strings) as keyword arguments."""
        return parse_key_values(self.optimizer_args, "optimizer_args")


def flatten_sections(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Merge kohya's ``[model_arguments]``-style tables into one flat mapping."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping) and key not in TrainConfig.model_fields:
            for inner_key, inner_value in value.items():
                if inner_key in flat:
                    raise ConfigError(f"key {inner_key!r} is set in more than one section")
                flat[inner_key] = inner_value
        else:
            if key in flat:
                raise ConfigError(f"key {key!r} is set in more than one section")
            flat[key] = value
    return flat


def build_config(
    values: Mapping[str, Any],
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    base_dir: Path | None = None,
) -> TrainConfig:
    """kohya's defaults < preset < ``values`` (a parsed config file) < ``overrides``
    (CLI flags). ``base_dir``: where a relative ``dataset_config`` may also be found."""
    return build_config_with_sources(values, preset=preset, overrides=overrides, base_dir=base_dir)[
        0
    ]


def build_config_with_sources(
    values: Mapping[str, Any],
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    base_dir: Path | None = None,
) -> tuple[TrainConfig, dict[str, str]]:
    """The config, and where each set key came from (``preset``, ``file``, ``override``);
    a key missing from the map has kohya's default."""
    general = values.get("general") if "datasets" in values else None
    flat = flatten_sections({k: v for k, v in values.items() if general is None or k != "general"})
    preset = preset or flat.pop("preset", None)
    flat.pop("preset", None)
    preset_part: dict[str, Any] = preset_values(preset) if preset else {}
    known = set(TrainConfig.model_fields)
    file_part = check_keys(translate_kohya_keys(flat), known)
    override_part = check_keys(translate_kohya_keys(dict(overrides or {})), known)
    merged = {**preset_part, **file_part, **override_part}
    if "datasets" in file_part:
        merged["datasets"] = with_general(file_part["datasets"], general or {})
    if merged.get("dataset_config"):
        if merged.get("datasets"):
            raise ConfigError("set dataset_config or [[datasets]], not both")
        merged["datasets"] = read_dataset_config(Path(merged["dataset_config"]), base_dir)
    sources = {key: f"preset {preset}" for key in preset_part}
    sources.update({key: "config file" for key in file_part})
    sources.update({key: "command line" for key in override_part})
    try:
        return TrainConfig.model_validate(merged), sources
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML config file's raw tables; a clear :class:`ConfigError` when unreadable."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None


def load_config(
    path: Path,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Read a TOML config file (kohya layout accepted) into a validated :class:`TrainConfig`."""
    raw = read_config_file(path)
    return build_config(raw, preset=preset, overrides=overrides, base_dir=Path(path).parent)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        # A check across keys has no location; its message names the keys itself.
        message = str(item["msg"]).removeprefix("Value error, ")
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "invalid config: " + "; ".join(parts)

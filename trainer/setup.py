"""Everything a run needs before its first step, gathered in one :class:`Session`.

Order matters: the base is loaded and frozen, the dataset scanned and latents cached
(the VAE is then no longer needed on the GPU), LoRA injected with the global RNG seeded
(so its initial weights depend on the seed only), then optimizer and schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import cast_training_params

from lab.families import FAMILIES, BaseFamily
from lab.training.config import TrainConfig, parse_key_values
from trainer.cache import LatentCache, TextEncoderCache, VaeEncoder
from trainer.callbacks import Callbacks
from trainer.data import TrainingData, load_training_data
from trainer.distributed import start_accelerator
from trainer.loss import NoiseOptions
from trainer.models import BaseModel, load_base_model, vae_fingerprint
from trainer.network import LoraNetwork, apply_lora
from trainer.optim import check_optimizer_available, plan_steps, warmup_steps
from trainer.optimization import build_optimization
from trainer.sampling import SamplePrompt, read_prompt_file
from trainer.saving import RunInfo
from trainer.speed import (
    check_memory_budget,
    compile_unet,
    device_budget,
    estimate_peak_memory,
    speed_up,
)
from trainer.state import RunShape
from trainer.text import TextEncodeFn, text_encoder_fn

logger = logging.getLogger(__name__)

# modelspec.architecture (Stability's model spec) per family, without the "/lora" suffix.
ARCHITECTURES = {
    BaseFamily.SD15: "stable-diffusion-v1",
    BaseFamily.SDXL: "stable-diffusion-xl-v1-base",
}


@dataclass
class Session:
    """The prepared run: models on the device, data, caches, optimizer, schedule."""

    accelerator: Accelerator
    device: torch.device
    weight_dtype: torch.dtype
    seed: int
    base: BaseModel
    unet: torch.nn.Module
    network: LoraNetwork
    data: TrainingData
    latent_cache: LatentCache | None
    text_cache: TextEncoderCache | None
    encode_text: TextEncodeFn
    vae_encoder: VaeEncoder
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    total_steps: int
    num_epochs: int
    noise: NoiseOptions
    shape: RunShape
    run_info: RunInfo
    sample_prompts: list[SamplePrompt]


def prepare_session(config: TrainConfig, callbacks: Callbacks) -> Session:
    """Load, scan, cache and build everything; report each phase through ``callbacks``."""
    started = time.time()
    check_optimizer_available(config.optimizer_type)
    accelerator, device, weight_dtype = start_accelerator(config.mixed_precision)
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    config.output_dir.mkdir(parents=True, exist_ok=True)

    callbacks.on_status("loading", config.pretrained_model_name_or_path)
    base = load_base_model(config)
    # Every rank walks the same global batches and trains on its share of each
    # (trainer.distributed), so a batch of the plan is train_batch_size per process.
    world = accelerator.num_processes
    data = load_training_data(config)
    data = dataclasses.replace(data, batch_size=config.train_batch_size * world)
    # The VAE runs in fp32: SD1.5's overflows in fp16.
    vae_encoder = VaeEncoder(base.vae.to(device, torch.float32), device)
    latent_cache = encode_latents(config, accelerator, data, vae_encoder, callbacks)
    network = inject_network(config, base, device, weight_dtype, seed)
    plan = plan_steps(
        data.batches_per_epoch(),
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_train_epochs=config.max_train_epochs,
        max_train_steps=config.max_train_steps,
    )
    optimizer, optimizer_label, lr_scheduler, trainable = build_optimization(config, network, plan)
    trainable_count = sum(p.numel() for p in trainable)
    estimate = estimate_peak_memory(base, config, data, trainable_count=trainable_count)
    check_memory_budget(estimate, device_budget(device, config.memory_budget_gb), config)
    forward_unet = compile_unet(base.unet) if config.torch_compile else base.unet
    forward_unet, optimizer, lr_scheduler = accelerator.prepare(
        forward_unet, optimizer, lr_scheduler
    )
    sample_prompts = load_sample_prompts(config, seed)
    encode_text, text_cache = cache_text(config, base, data, device, sample_prompts)

    logger.info(
        "seed %d, %d steps (%d per epoch), %d epochs, device %s, dtype %s",
        seed,
        plan.total_steps,
        plan.steps_per_epoch,
        plan.num_epochs,
        device,
        weight_dtype,
    )
    return Session(
        accelerator=accelerator,
        device=device,
        weight_dtype=weight_dtype,
        seed=seed,
        base=base,
        unet=forward_unet,
        network=network,
        data=data,
        latent_cache=latent_cache,
        text_cache=text_cache,
        encode_text=encode_text,
        vae_encoder=vae_encoder,
        trainable=trainable,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        total_steps=plan.total_steps,
        num_epochs=plan.num_epochs,
        noise=noise_options(config),
        shape=run_shape(config, data.batch_size, plan.batches_per_epoch),
        run_info=_run_info(
            config, base, data, seed, optimizer_label, plan.total_steps, plan.num_epochs, started
        ),
        sample_prompts=sample_prompts,
    )


# -- the steps, in the order prepare_session takes them -------------------------------------


def encode_latents(
    config: TrainConfig,
    accelerator: Accelerator,
    data: TrainingData,
    vae_encoder: VaeEncoder,
    callbacks: Callbacks,
) -> LatentCache | None:
    """Encode every image once, when latents are cached (in memory, or on disk)."""
    if not config.cache_latents:
        return None
    disk_dir = config.latent_cache_dir or config.output_dir / ".latent_cache"
    disk_dir = disk_dir if config.cache_latents_to_disk else None
    # With a disk cache rank 0 encodes and writes it first; the others read it back.
    with accelerator.main_process_first() if disk_dir else contextlib.nullcontext():
        return cache_latents(
            data,
            vae_encoder,
            callbacks,
            disk_dir=disk_dir,
            encode_batch_size=max(4, config.train_batch_size),
        )


def load_sample_prompts(config: TrainConfig, seed: int) -> list[SamplePrompt]:
    """The prompts of ``sample_prompts`` (kohya's prompt file), none without one."""
    if not config.sample_prompts:
        return []
    return read_prompt_file(config.sample_prompts, seed=seed, default_size=config.resolution)


def noise_options(config: TrainConfig) -> NoiseOptions:
    """The noise terms of the config, for the loss (which takes only these)."""
    return NoiseOptions(
        offset=config.noise_offset,
        offset_random_strength=config.noise_offset_random_strength,
        multires_iterations=config.multires_noise_iterations,
        multires_discount=config.multires_noise_discount,
        adaptive_scale=config.adaptive_noise_scale,
    )


def run_shape(config: TrainConfig, global_batch: int, batches_per_epoch: int) -> RunShape:
    """What a saved state must match to be resumed by this run. The batch is the global
    one: a state resumes on another number of processes when train_batch_size ×
    processes is the same."""
    return RunShape(
        network_dim=config.network_dim,
        network_alpha=config.network_alpha,
        network_args=",".join(config.network_args),
        train_text_encoder=config.train_text_encoder,
        batch_size=global_batch,
        batches_per_epoch=batches_per_epoch,
    )


def cache_latents(
    data: TrainingData,
    vae_encoder: VaeEncoder,
    callbacks: Callbacks,
    *,
    disk_dir: Path | None,
    encode_batch_size: int,
) -> LatentCache:
    """Encode every image once (reusing the disk cache when asked), then move the VAE off
    the accelerator: steps read the cache and never need it there."""
    callbacks.on_status("caching", f"latents of {len(data.records)} images")
    vae = vae_encoder.vae
    latent_cache = LatentCache(
        vae_encoder,
        vae_fingerprint(vae),
        disk_dir=disk_dir,
        encode_batch_size=encode_batch_size,
    )
    latent_cache.fill(data.records)
    callbacks.on_status(
        "caching", f"latents: {vae_encoder.images} encoded, {latent_cache.reused} reused"
    )
    if vae_encoder.device.type != "cpu":
        vae.to("cpu")  # cached: free the accelerator's memory for the UNet
    return latent_cache


def inject_network(
    config: TrainConfig,
    base: BaseModel,
    device: torch.device,
    weight_dtype: torch.dtype,
    seed: int,
) -> LoraNetwork:
    """Move the UNet and text encoders to the device, wrap them with the network and make
    the wrapped models ready to train (fp32 adapters, SDPA, checkpointing, train mode)."""
    torch.manual_seed(seed)  # LoRA init draws from the global RNG
    encoders = [e for e in (base.text_encoder, base.text_encoder_2) if e is not None]
    unet = base.unet.to(device, weight_dtype)
    trained_encoders = encoders if config.train_text_encoder else []
    network = apply_lora(
        unet,
        trained_encoders[0] if trained_encoders else None,
        config,
        text_encoder_2=trained_encoders[1] if len(trained_encoders) > 1 else None,
    )
    for encoder in encoders:
        encoder.to(device, weight_dtype)
    cast_training_params([unet, *encoders], dtype=torch.float32)  # LoRA weights stay fp32
    speed_up(unet, device)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        for encoder in trained_encoders:
            # transformers ≥ 5 renamed it; older versions only have the first name.
            enable = getattr(encoder, "activation_checkpointing_enable", None)
            (enable or encoder.gradient_checkpointing_enable)()
    unet.train()
    for encoder in trained_encoders:
        encoder.train()
    return network


def cache_text(
    config: TrainConfig,
    base: BaseModel,
    data: TrainingData,
    device: torch.device,
    sample_prompts: list[SamplePrompt],
) -> tuple[TextEncodeFn, TextEncoderCache | None]:
    """The caption encoder a step calls: with frozen encoders and static captions, every
    caption and sample prompt is encoded once here and the encoders leave the GPU."""
    encode_text = text_encoder_fn(
        base,
        device,
        clip_skip=config.clip_skip,
        trained=config.train_text_encoder,
        max_token_length=config.max_token_length,
    )
    if not (
        not config.train_text_encoder and config.cache_text_encoder_outputs and data.captions_static
    ):
        return encode_text, None
    text_cache = TextEncoderCache(encode_text)
    rng = random.Random(0)  # static captions: the rng is never drawn from
    text_cache.fill(r.rules.apply(r.caption, rng) for r in data.records)
    # Sample prompts are static too: with them cached the encoders are never needed
    # again, and on a GPU they leave it (SDXL's two: ~1.6 GB in bf16).
    text_cache.fill(t for p in sample_prompts for t in (p.prompt, p.negative))
    if device.type == "cuda":
        for encoder in (base.text_encoder, base.text_encoder_2):
            if encoder is not None:
                encoder.to("cpu")
        torch.cuda.empty_cache()
    return text_cache.get, text_cache


def _run_info(
    config: TrainConfig,
    base: BaseModel,
    data: TrainingData,
    seed: int,
    optimizer_label: str,
    total_steps: int,
    num_epochs: int,
    started: float,
) -> RunInfo:
    def dirs(reg: bool) -> dict[str, dict[str, int]]:
        return {
            s.name: {"n_repeats": s.repeats, "img_count": s.image_count}
            for s in data.subsets
            if s.is_reg == reg
        }

    options = {
        "ss_min_snr_gamma": config.min_snr_gamma,
        "ss_debiased_estimation": config.debiased_estimation_loss,
        "ss_noise_offset": config.noise_offset,
        "ss_noise_offset_random_strength": config.noise_offset_random_strength,
        "ss_multires_noise_iterations": config.multires_noise_iterations,
        "ss_multires_noise_discount": config.multires_noise_discount,
        "ss_zero_terminal_snr": config.zero_terminal_snr,
        "ss_shuffle_caption": config.shuffle_caption,
        "ss_keep_tokens": config.keep_tokens,
        "ss_caption_dropout_rate": config.caption_dropout_rate,
        "ss_caption_tag_dropout_rate": config.caption_tag_dropout_rate,
        "ss_flip_aug": config.flip_aug,
        "ss_prior_loss_weight": config.prior_loss_weight,
        "ss_gradient_checkpointing": config.gradient_checkpointing,
        "ss_gradient_accumulation_steps": config.gradient_accumulation_steps,
        "ss_max_grad_norm": config.max_grad_norm,
        "ss_cache_latents": config.cache_latents,
        "ss_enable_bucket": config.enable_bucket,
        "ss_min_bucket_reso": config.min_bucket_reso,
        "ss_max_bucket_reso": config.max_bucket_reso,
        "ss_bucket_no_upscale": config.bucket_no_upscale,
    }
    buckets = data.bucket_counts()
    family = BaseFamily.SDXL if base.is_sdxl else BaseFamily.SD15
    return RunInfo(
        base_model_name=base.name,
        base_model_version=FAMILIES[family].kohya_version,
        architecture=ARCHITECTURES[family],
        network_module=config.network_module,
        prediction_type=base.prediction_type,
        resolution=config.resolution,
        network_dim=config.network_dim,
        network_alpha=config.network_alpha,
        # kohya writes the network args as strings: {"conv_dim": "4", "conv_alpha": "1"}.
        network_args={k: str(v) for k, v in parse_key_values(config.network_args, "").items()},
        network_dropout=config.network_dropout,
        train_text_encoder=config.train_text_encoder,
        output_name=config.output_name,
        clip_skip=config.clip_skip,
        num_train_images=data.num_train_images,
        num_reg_images=data.num_reg_images,
        num_batches_per_epoch=data.batches_per_epoch(),
        num_epochs=num_epochs,
        max_train_steps=total_steps,
        batch_size=config.train_batch_size,
        learning_rate=config.learning_rate,
        unet_lr=config.effective_unet_lr,
        text_encoder_lr=config.effective_text_encoder_lr if config.train_text_encoder else None,
        optimizer=optimizer_label,
        lr_scheduler=config.lr_scheduler,
        lr_warmup_steps=warmup_steps(config.lr_warmup_steps, total_steps),
        mixed_precision=config.mixed_precision,
        seed=seed,
        tag_frequency=data.tag_frequency(),
        dataset_dirs=dirs(False),
        reg_dataset_dirs=dirs(True),
        bucket_info={
            "buckets": {
                str(i): {"resolution": list(b), "count": n}
                for i, (b, n) in enumerate(buckets.items())
            }
        },
        options={k: str(v) for k, v in options.items()},
        training_started_at=started,
        session_id=uuid.uuid4().hex,
        comment=config.training_comment,
    )

"""Sample images during training from a kohya prompt file.

Prompt lines look like ``a photo of sks --n blurry --w 512 --h 768 --d 42 --l 7 --s 28``:
``--n`` negative prompt, ``--w/--h`` size, ``--d`` seed, ``--l`` CFG scale, ``--s``
steps. A prompt without ``--d`` gets a seed from its line number, so every epoch uses
the same seeds and epochs compare like for like. Samples go through the same diffusers
pipeline class inference uses, with the LoRA active, so they match what users will get.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from lab.prompts import SAMPLE_MAX_SIDE, SAMPLE_MAX_STEPS
from lab.render import DISCORD_UPLOAD_LIMIT, encode_for_upload, sample_grid
from trainer.errors import ConfigError
from trainer.models import BaseModel
from trainer.network import LoraNetwork
from trainer.text import Encoded

logger = logging.getLogger(__name__)

_OPTION = re.compile(r"\s--(n|w|h|d|l|s)\s+")
_SCHEDULERS = {
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpmsolver++": DPMSolverMultistepScheduler,
}


@dataclass(frozen=True, slots=True)
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int = 512
    height: int = 512
    seed: int = 0
    cfg_scale: float = 7.0
    steps: int = 20


def parse_prompt_line(
    line: str, *, default_seed: int, default_size: tuple[int, int]
) -> SamplePrompt:
    """One kohya prompt-file line → :class:`SamplePrompt`."""
    parts = _OPTION.split(" " + line.strip())
    prompt = parts[0].strip()
    values: dict[str, str] = dict(zip(parts[1::2], (p.strip() for p in parts[2::2]), strict=True))
    try:
        sample = SamplePrompt(
            prompt=prompt,
            negative=values.get("n", ""),
            width=int(values.get("w", default_size[0])),
            height=int(values.get("h", default_size[1])),
            seed=int(values.get("d", default_seed)),
            cfg_scale=float(values.get("l", 7.0)),
            steps=int(values.get("s", 20)),
        )
    except ValueError as error:
        raise ConfigError(f"bad sample prompt line {line!r}: {error}") from None
    if not (8 <= sample.width <= SAMPLE_MAX_SIDE and 8 <= sample.height <= SAMPLE_MAX_SIDE):
        raise ConfigError(
            f"sample prompt line {line!r}: --w/--h must be 8 to {SAMPLE_MAX_SIDE} pixels"
        )
    if not 1 <= sample.steps <= SAMPLE_MAX_STEPS:
        raise ConfigError(f"sample prompt line {line!r}: --s must be 1 to {SAMPLE_MAX_STEPS}")
    return sample


def read_prompt_file(path: Path, *, seed: int, default_size: tuple[int, int]) -> list[SamplePrompt]:
    """Every non-empty, non-comment line of a prompt file."""
    if not path.is_file():
        raise ConfigError(f"sample_prompts file not found: {path}")
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.lstrip().startswith("#")]
    return [
        parse_prompt_line(line, default_seed=seed + i, default_size=default_size)
        for i, line in enumerate(lines)
    ]


def generate_samples(
    base: BaseModel,
    prompts: list[SamplePrompt],
    *,
    sampler: str,
    encode_text: Callable[[list[str]], Encoded],
    folder: Path,
    stem: str,
    device: torch.device,
) -> list[Path]:
    """Render each prompt with the LoRA active; returns the PNG paths.

    Prompts are encoded by ``encode_text``, the function training uses, so ``clip_skip``
    and the text-encoder LoRA act on samples exactly as they do on training captions.
    """
    pipe = sample_pipeline(base, sampler)
    folder.mkdir(parents=True, exist_ok=True)
    vae_device = next(base.vae.parameters()).device
    base.vae.to(device)
    paths = []
    try:
        for index, item in enumerate(prompts):
            path = folder / f"{stem}_{index:02d}_{item.seed}.png"
            render(pipe, base, item, encode_text).save(path)
            paths.append(path)
    finally:
        base.vae.to(vae_device)
    return paths


def sample_pipeline(
    base: BaseModel, sampler: str
) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """The diffusers pipeline inference uses, around the training modules (LoRA active)."""
    scheduler = _SCHEDULERS[sampler].from_config(base.sample_scheduler_config)
    if base.is_sdxl:
        pipe: StableDiffusionPipeline | StableDiffusionXLPipeline = StableDiffusionXLPipeline(
            unet=base.unet,
            vae=base.vae,
            text_encoder=base.text_encoder,
            text_encoder_2=base.text_encoder_2,
            tokenizer=base.tokenizer,
            tokenizer_2=base.tokenizer_2,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=base.force_zeros_for_empty_prompt,
        )
    else:
        pipe = StableDiffusionPipeline(
            unet=base.unet,
            vae=base.vae,
            text_encoder=base.text_encoder,
            tokenizer=base.tokenizer,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(
    pipe: StableDiffusionPipeline | StableDiffusionXLPipeline,
    base: BaseModel,
    item: SamplePrompt,
    encode_text: Callable[[list[str]], Encoded],
) -> Image.Image:
    """One sample. The prompt goes through ``encode_text`` (the training path); an empty
    SDXL negative is zeros, as the pipeline itself would make it."""
    generator = torch.Generator("cpu").manual_seed(item.seed)
    with torch.no_grad():
        hidden, pooled = encode_text([item.prompt, item.negative])
        kwargs = {"prompt_embeds": hidden[:1], "negative_prompt_embeds": hidden[1:]}
        if pooled is not None:
            kwargs["pooled_prompt_embeds"] = pooled[:1]
            kwargs["negative_pooled_prompt_embeds"] = pooled[1:]
            if not item.negative and base.force_zeros_for_empty_prompt:
                kwargs["negative_prompt_embeds"] = torch.zeros_like(hidden[1:])
                kwargs["negative_pooled_prompt_embeds"] = torch.zeros_like(pooled[1:])
        return pipe(
            **kwargs,
            width=item.width,
            height=item.height,
            num_inference_steps=item.steps,
            guidance_scale=item.cfg_scale,
            generator=generator,
        ).images[0]


def write_grid(path: Path, prompts: list[str], samples: dict[int, list[Path]]) -> Path:
    """The labelled grid of every sampled epoch so far (rows = prompts, columns = epochs),
    drawn by ``lab.render.sample_grid`` — the same grid the lab posts."""

    epochs = sorted(samples)
    cells = []
    for row in range(len(prompts)):
        cells.append(
            [Image.open(samples[e][row]) if row < len(samples[e]) else None for e in epochs]
        )
    grid = sample_grid(cells, prompts, [f"epoch {e}" for e in epochs])
    grid.save(path)
    return path


def weight_grid(
    base: BaseModel,
    network: LoraNetwork,
    prompts: list[SamplePrompt],
    weights: tuple[float, ...],
    *,
    sampler: str,
    encode_text: Callable[[list[str]], Encoded],
    folder: Path,
    stem: str,
    device: torch.device,
    max_bytes: int = DISCORD_UPLOAD_LIMIT,
) -> Path:
    """Render every prompt at every LoRA weight (A1111/ComfyUI strength semantics) and
    write the grid (rows = prompts, columns = weights) as a lossless PNG and as a WebP
    under ``max_bytes`` to post; returns the WebP."""
    samples: dict[float, list[Path]] = {}
    for weight in weights:
        with network.strength(weight):
            samples[weight] = generate_samples(
                base,
                prompts,
                sampler=sampler,
                encode_text=encode_text,
                folder=folder,
                stem=f"{stem}_w{weight:g}",
                device=device,
            )
    ordered = sorted(samples)
    cells = [[Image.open(samples[w][row]) for w in ordered] for row in range(len(prompts))]
    grid = sample_grid(cells, [p.prompt for p in prompts], [f"weight {w:g}" for w in ordered])
    grid.save(folder / f"{stem}_weights.png")
    webp = folder / f"{stem}_weights.webp"
    webp.write_bytes(encode_for_upload(grid, max_bytes=max_bytes))
    return webp

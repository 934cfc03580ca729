"""Samples from a saved LoRA file, the way inference tools use it: the base pipeline,
the file loaded with diffusers' `load_lora_weights`, one column per LoRA weight.

This is what `/test prompts` shows testers, so it renders from the released file, not
from the training modules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from lab.render import sample_grid
from lab.training import TrainConfig
from trainer.errors import TrainerError
from trainer.models import load_base_model
from trainer.sampling import sample_pipeline

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = (0.0, 0.5, 0.8, 1.0)


def lora_weight_grid(
    config: TrainConfig,
    lora: Path,
    prompts: Sequence[str],
    out: Path,
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    steps: int = 20,
    seed: int = 1234,
) -> Path:
    """Render every prompt at every weight of `lora` on the config's base model and
    write the labelled grid (rows = prompts, columns = weights) to `out` (PNG)."""
    base = load_base_model(config)
    pipe = sample_pipeline(base, config.sample_sampler)
    try:
        pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="lab")
    except (ValueError, KeyError) as error:
        raise TrainerError(f"{lora.name} cannot be loaded by diffusers: {error}") from None
    width, height = config.resolution
    cells: list[list[Image.Image | None]] = [[] for _ in prompts]
    for weight in weights:
        pipe.set_adapters(["lab"], adapter_weights=[weight])
        for row, prompt in enumerate(prompts):
            generator = torch.Generator("cpu").manual_seed(seed + row)
            with torch.no_grad():
                image = pipe(
                    prompt=prompt,
                    width=width,
                    height=height,
                    num_inference_steps=steps,
                    generator=generator,
                ).images[0]
            cells[row].append(image)
    grid = sample_grid(cells, list(prompts), [f"weight {w:g}" for w in weights])
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    log.info("rendered %d prompts × %d weights of %s", len(prompts), len(weights), lora.name)
    return out

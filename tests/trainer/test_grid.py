"""The grid over LoRA weights: a real labelled image whose weight-0 cells are the base
model's own output and whose weight-1 cells are inference with the saved file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab.render import encode_for_upload, sample_grid
from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.loop import train

PROMPTS = "sks dog on grass --n blurry --d 7 --s 3 --l 6\nsks cat, tree --s 2\n"


@pytest.fixture(scope="module")
def grid_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from trainer.tiny import build_dataset

    root = tmp_path_factory.mktemp("grid")
    prompts = root / "prompts.txt"
    prompts.write_text(PROMPTS)
    config = build_config(
        base_values(
            tiny_model,
            build_dataset(root / "data"),
            root / "out",
            learning_rate=2e-2,
            text_encoder_lr=1e-2,
            sample_prompts=str(prompts),
            sample_weights=[0, 0.5, 1.0],
        )
    )
    result = train(config)
    return {"result": result, "sample": root / "out" / "sample", "seed": config.seed}


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _infer(tiny_model: Path, lora: Path | None, prompt: str, negative: str, seed: int, steps: int,
           cfg: float) -> Image.Image:  # fmt: skip
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # sample_sampler = ddim
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        pipe.load_lora_weights(str(lora))
    return pipe(
        prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=cfg,
        height=64, width=64, generator=torch.Generator().manual_seed(seed),
    ).images[0]  # fmt: skip


def test_grid_is_a_labelled_image_sized_to_post(grid_run: dict) -> None:
    webp = grid_run["result"].weight_grid
    assert webp is not None and webp.suffix == ".webp"
    assert webp.stat().st_size <= 8 * 1024 * 1024
    png = Image.open(grid_run["sample"] / "tiny_weights.png")
    # Defaults of lab.render.sample_grid: 220 px of row labels, 256 px cells, 28 px header.
    assert png.size == (220 + 3 * 256, 28 + 2 * 256)
    assert Image.open(webp).size == png.size
    pixels = _pixels(png)
    background = pixels[0, 0]
    header = pixels[:28, 220:]
    labels = pixels[28:, :220]
    assert (np.abs(header - background).sum(axis=-1) > 100).sum() > 50  # "weight 0" … drawn
    assert (np.abs(labels - background).sum(axis=-1) > 100).sum() > 100  # the prompts drawn
    assert webp.read_bytes()[:4] == b"RIFF"


def test_weight_zero_is_the_base_model_and_weight_one_the_saved_file(
    grid_run: dict, tiny_model: Path
) -> None:
    seed = grid_run["seed"]
    cases = [
        ("sks dog on grass", "blurry", 7, 3, 6.0, 0),
        ("sks cat, tree", "", seed + 1, 2, 7.0, 1),
    ]
    for prompt, negative, prompt_seed, steps, cfg, index in cases:
        zero = Image.open(grid_run["sample"] / f"tiny_w0_{index:02d}_{prompt_seed}.png")
        half = Image.open(grid_run["sample"] / f"tiny_w0.5_{index:02d}_{prompt_seed}.png")
        one = Image.open(grid_run["sample"] / f"tiny_w1_{index:02d}_{prompt_seed}.png")
        base = _infer(tiny_model, None, prompt, negative, prompt_seed, steps, cfg)
        lora = _infer(tiny_model, grid_run["result"].final_path, prompt, negative, prompt_seed,
                      steps, cfg)  # fmt: skip
        assert np.abs(_pixels(zero) - _pixels(base)).max() <= 1
        assert np.abs(_pixels(one) - _pixels(lora)).max() <= 1
        assert np.abs(_pixels(one) - _pixels(base)).max() > 2  # the LoRA shows
        assert np.abs(_pixels(half) - _pixels(one)).max() > 0


def test_upload_encoding_shrinks_until_it_fits() -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (600, 900, 3), dtype=np.uint8))
    grid = sample_grid([[noisy, noisy]], ["a prompt"], ["weight 0", "weight 1"])
    for fmt, magic in (("WEBP", b"RIFF"), ("JPEG", b"\xff\xd8")):
        data = encode_for_upload(grid, max_bytes=60_000, fmt=fmt)
        assert len(data) <= 60_000 and data[: len(magic)] == magic
        assert Image.open(io.BytesIO(data)).width <= grid.width
    with pytest.raises(ValueError, match="WEBP or JPEG"):
        encode_for_upload(grid, fmt="GIF")

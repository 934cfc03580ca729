"""SDXL: the CLI trains a tiny SDXL-shaped model; the file follows the SDXL contract,
diffusers' SDXL pipeline loads it, and samples match inference with the saved file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from tests.trainer.readers import merge_file
from trainer.formats import SDXL_PREFIXES, kohya_module_name
from trainer.loop import train
from trainer.sgm import SgmLayout
from trainer.text import sdxl_time_ids
from trainer.tiny import build_dataset, write_toml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sdxl_run(tiny_sdxl_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sdxl")
    data = build_dataset(root / "data")
    prompts = root / "prompts.txt"
    prompts.write_text("sks dog on grass --n blurry --d 11 --s 3 --l 5\nsks cat --s 2\n")
    values = base_values(
        tiny_sdxl_model,
        data,
        root / "out",
        text_encoder_lr=1e-3,
        learning_rate=1e-2,
        sample_prompts=str(prompts),
        sample_every_n_epochs=1,
    )
    config = write_toml(root / "config.toml", values)
    done = subprocess.run(
        [sys.executable, "-m", "trainer", str(config), "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": root / "out", "final": root / "out" / "tiny.safetensors"}


def test_keys_and_metadata_follow_the_sdxl_contract(sdxl_run: dict) -> None:
    tensors = load_file(sdxl_run["final"])
    prefixes = {k.split(".")[0].split("_")[0] + "_" + k.split("_")[1] for k in tensors}
    assert prefixes == {"lora_unet", "lora_te1", "lora_te2"}
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in tensors
    assert "lora_te2_text_model_encoder_layers_2_mlp_fc2.alpha" in tensors
    # proj_in is Linear in SDXL (1×1 conv in SD1.5): kohya targets it either way, named
    # as kohya's SDXL trainer names it (the original UNet's input_blocks.3.1 here).
    assert "lora_unet_input_blocks_3_1_proj_in.lora_down.weight" in tensors
    meta = safe_open(str(sdxl_run["final"]), "pt").metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["ss_v2"] == "False"


def test_diffusers_sdxl_pipeline_loads_it_exactly(sdxl_run: dict, tiny_sdxl_model: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    tensors = load_file(sdxl_run["final"])
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_model, local_files_only=True)
    reference = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_model, local_files_only=True)
    layout = SgmLayout.of(reference.unet.config)
    merged = merge_file(
        reference.unet,
        tensors,
        lambda n: kohya_module_name("unet", n, SDXL_PREFIXES, unet_layout=layout),
    )
    for component in ("text_encoder", "text_encoder_2"):
        merged += merge_file(
            getattr(reference, component),
            tensors,
            lambda n, c=component: kohya_module_name(c, n, SDXL_PREFIXES),
        )
    assert merged == len({k.rsplit(".", 2)[0] for k in tensors if k.endswith("down.weight")})

    def image(p: StableDiffusionXLPipeline) -> np.ndarray:
        generator = torch.Generator().manual_seed(0)
        return p("sks dog", num_inference_steps=2, height=64, width=64,
                 generator=generator, output_type="np").images[0]  # fmt: skip

    base = image(pipe)
    pipe.load_lora_weights(str(sdxl_run["final"]))
    loaded, expected = image(pipe), image(reference)
    assert np.abs(loaded - base).max() > 1e-3  # the LoRA changes the output
    np.testing.assert_allclose(loaded, expected, atol=1e-4)


def test_training_samples_match_inference_with_the_saved_file(
    sdxl_run: dict, tiny_sdxl_model: Path
) -> None:
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_model, local_files_only=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # sample_sampler = ddim
    pipe.load_lora_weights(str(sdxl_run["final"]))
    last = sorted((sdxl_run["out"] / "sample").glob("tiny_e000002_00_11.png"))
    assert last, sorted(p.name for p in (sdxl_run["out"] / "sample").iterdir())
    inferred = pipe(
        "sks dog on grass",
        negative_prompt="blurry",
        num_inference_steps=3,
        guidance_scale=5,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(11),
    ).images[0]
    sampled = np.asarray(Image.open(last[0]), dtype=np.int16)
    assert np.abs(sampled - np.asarray(inferred, dtype=np.int16)).max() <= 1


def test_size_and_crop_conditioning_follow_the_bucket() -> None:
    ids = sdxl_time_ids([(300, 200)], [(10, 4)], [(256, 192)])
    assert ids.tolist() == [[200, 300, 4, 10, 192, 256]]  # (h, w) order, as SDXL wants


def test_sdxl_text_outputs_are_cached_when_the_encoders_are_frozen(
    tiny_sdxl_model: Path, dataset: Path, tmp_path: Path
) -> None:
    config = build_config(
        base_values(tiny_sdxl_model, dataset, tmp_path / "o", network_train_unet_only=True)
    )
    result = train(config)
    assert result.captions_encoded == 4  # four distinct static captions, each encoded once
    tensors = load_file(result.final_path)
    assert all(k.startswith("lora_unet_") for k in tensors)

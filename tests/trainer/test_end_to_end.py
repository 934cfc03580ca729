"""The real CLI trains the tiny model; the file it writes honours the kohya contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.trainer.conftest import base_values
from trainer.saving import kohya_module_name
from trainer.tiny import build_dataset, merge_kohya_lora, write_toml

REPO = Path(__file__).resolve().parents[2]
METADATA_KEYS = [
    "ss_base_model_version",
    "ss_v2",
    "ss_network_module",
    "ss_network_dim",
    "ss_network_alpha",
    "ss_network_args",
    "ss_output_name",
    "ss_resolution",
    "ss_clip_skip",
    "ss_num_train_images",
    "ss_num_epochs",
    "ss_epoch",
    "ss_steps",
    "ss_learning_rate",
    "ss_optimizer",
    "ss_lr_scheduler",
    "ss_tag_frequency",
    "ss_dataset_dirs",
    "ss_training_started_at",
    "ss_training_finished_at",
    "sshs_model_hash",
    "modelspec.architecture",
]


@pytest.fixture(scope="module")
def cli_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`python -m trainer CONFIG.toml overrides…` in a subprocess, as a user runs it."""
    root = tmp_path_factory.mktemp("e2e")
    data = build_dataset(root / "data", repeats=2)
    values = base_values(
        tiny_model,
        data,
        root / "out",
        max_train_epochs=3,
        save_every_n_epochs=1,
        save_last_n_epochs=1,
        network_alpha=3.0,
        clip_skip=2,
        text_encoder_lr=5e-4,
        lr_scheduler="cosine",
        lr_warmup_steps=0.25,
    )
    config = write_toml(root / "train.toml", values)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, "-m", "trainer", str(config), "learning_rate=0.01"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {
        "root": root,
        "out": root / "out",
        "data": data,
        "values": values,
        "stdout": completed.stdout,
        "stderr": completed.stderr,
    }


def test_cli_runs_end_to_end(cli_run: dict) -> None:
    # How fast is bench/'s question (bench/train_throughput.py), not a test's.
    assert "done: 12 steps, 3 epochs" in cli_run["stdout"]  # 4 images × 2 repeats / batch 2
    # The progress bar shows the loss, the rate and the remaining time.
    assert "loss=" in cli_run["stderr"]
    assert "it/s" in cli_run["stderr"]
    assert "<00:00" in cli_run["stderr"] or "<" in cli_run["stderr"]


def test_epoch_files_and_save_last_n(cli_run: dict) -> None:
    out: Path = cli_run["out"]
    # save_every_n_epochs=1, save_last_n_epochs=1: only the newest epoch file survives.
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "tiny-000002.safetensors",
        "tiny.safetensors",
    ]


def test_every_key_follows_the_kohya_contract(cli_run: dict, tiny_model: Path) -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(tiny_model / "text_encoder", local_files_only=True)
    modules = {
        **{"lora_unet_" + n.replace(".", "_"): m for n, m in unet.named_modules()},
        **{kohya_module_name("text_encoder", n): m for n, m in text_encoder.named_modules()},
    }
    tensors = load_file(cli_run["out"] / "tiny.safetensors")
    names = {key.split(".")[0] for key in tensors}
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in names
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1" in names
    assert any("attn2_to_k" in n for n in names) and any("proj_in" in n for n in names)
    for name in names:
        assert set(k for k in tensors if k.split(".")[0] == name) == {
            f"{name}.lora_down.weight",
            f"{name}.lora_up.weight",
            f"{name}.alpha",
        }
        module = modules[name]  # KeyError = a key that maps to no real module
        down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
        weight = module.weight
        assert down.shape[:2] == (4, weight.shape[1])
        assert up.shape[:2] == (weight.shape[0], 4)
        assert tensors[f"{name}.alpha"].ndim == 0
        assert tensors[f"{name}.alpha"].item() == 3.0  # the configured alpha, not the rank

    # Every layer kohya targets is present: all Linear / 1×1 conv in transformer blocks.
    def is_target(module: torch.nn.Module) -> bool:
        if isinstance(module, torch.nn.Conv2d):
            return module.kernel_size == (1, 1)
        return isinstance(module, torch.nn.Linear)

    expected = {
        "lora_unet_" + n.replace(".", "_")
        for n, m in unet.named_modules()
        if ".attentions." in n and is_target(m)
    }
    assert expected == {n for n in names if n.startswith("lora_unet_")}


def test_metadata_is_present_and_truthful(cli_run: dict) -> None:
    path: Path = cli_run["out"] / "tiny.safetensors"
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    missing = [k for k in METADATA_KEYS if k not in meta]
    assert not missing
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_v2"] == "False"
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == "4"
    assert float(meta["ss_network_alpha"]) == 3.0
    assert meta["ss_output_name"] == "tiny"
    assert meta["ss_resolution"] == "(64, 64)"
    assert meta["ss_clip_skip"] == "2"
    assert meta["ss_num_train_images"] == "8"  # 4 images × 2 repeats
    assert meta["ss_num_epochs"] == "3" and meta["ss_epoch"] == "3" and meta["ss_steps"] == "12"
    assert float(meta["ss_learning_rate"]) == 0.01  # the CLI override won
    assert meta["ss_optimizer"].startswith("torch.optim.adamw.AdamW")
    assert meta["ss_lr_scheduler"] == "cosine"
    assert meta["ss_lr_warmup_steps"] == "3"  # 25 % of 12
    assert json.loads(meta["ss_dataset_dirs"]) == {"2_sks": {"n_repeats": 2, "img_count": 4}}
    tags = json.loads(meta["ss_tag_frequency"])["2_sks"]
    assert tags["sks dog"] == 2 and tags["red ball"] == 1
    assert float(meta["ss_training_started_at"]) <= float(meta["ss_training_finished_at"])
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["modelspec.resolution"] == "64x64"
    # sshs_model_hash: SHA-256 of the tensor bytes after the safetensors header.
    blob = path.read_bytes()
    header = int.from_bytes(blob[:8], "little")
    import hashlib

    assert meta["sshs_model_hash"] == hashlib.sha256(blob[8 + header :]).hexdigest()
    epoch_meta = safe_open(str(cli_run["out"] / "tiny-000002.safetensors"), "pt").metadata()
    assert epoch_meta["ss_epoch"] == "2" and epoch_meta["ss_steps"] == "8"


def test_diffusers_loads_it_and_the_change_scales(cli_run: dict, tiny_model: Path) -> None:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    lora = cli_run["out"] / "tiny.safetensors"
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def render() -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        images = pipe(
            "sks dog, red ball",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=generator,
            output_type="np",
        ).images
        return torch.from_numpy(images)

    base = render()
    pipe.load_lora_weights(str(lora), adapter_name="tiny")
    outputs = {}
    for weight in (0.0, 0.5, 1.0):
        pipe.set_adapters(["tiny"], adapter_weights=[weight])
        outputs[weight] = render()
    assert torch.allclose(outputs[0.0], base, atol=1e-6)
    half = (outputs[0.5] - base).abs().mean().item()
    full = (outputs[1.0] - base).abs().mean().item()
    assert full > 1e-4, "the LoRA did not change the output"
    assert 0.2 < half / full < 0.8, (half, full)

    # diffusers reads the file as kohya tools do: the UNet it builds equals a manual merge
    # of W + alpha/r · up·down, so the stored alpha means what it says.
    tensors = load_file(lora)
    merged = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    merge_kohya_lora(merged, tensors)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(4))
    step = torch.tensor([500])
    pipe.set_adapters(["tiny"], adapter_weights=[1.0])
    with torch.no_grad():
        expected = merged(sample, step, context).sample
        loaded = pipe.unet(sample, step, context).sample
    torch.testing.assert_close(loaded, expected, atol=1e-5, rtol=1e-4)


def test_loralab_cli_is_registered(cli_run: dict, tiny_model: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from loralab.cli import main

    data = build_dataset(tmp_path / "data")
    values = base_values(tiny_model, data, tmp_path / "out", max_train_steps=1)
    del values["max_train_epochs"]  # one step shows the command trains; cli_run shows the rest
    config = write_toml(tmp_path / "t.toml", values)
    result = CliRunner().invoke(main, ["train", str(config), "--quiet", "output_name=viacli"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "viacli.safetensors").exists()

"""sd-scripts' loss options (loss_type/Huber, timestep range, adaptive noise, max-norm),
their dataset config, and a kohya_ss GUI-shaped config training on the tiny model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import DDPMScheduler
from peft import LoraConfig, inject_adapter_in_model

from lab.training.config import TrainConfig, build_config, load_config, parse_key_values
from lab.training.errors import ConfigError
from tests.trainer.conftest import base_values
from trainer.callbacks import NullCallbacks, Progress
from trainer.data import load_training_data
from trainer.errors import DatasetError
from trainer.kohya_terms import (
    adaptive_offset_noise,
    apply_max_norm,
    huber_thresholds,
    per_sample_loss,
    sample_timesteps,
)
from trainer.loop import train
from trainer.tiny import make_image


def test_huber_thresholds_follow_sd_scripts_schedules() -> None:
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    steps = torch.tensor([0, 500, 999])
    common = {"huber_c": 0.1, "huber_scale": 2.0, "num_train_timesteps": 1000}
    constant = huber_thresholds(steps, scheduler.alphas_cumprod, schedule="constant", **common)
    torch.testing.assert_close(constant, torch.full((3,), 0.2))
    exponential = huber_thresholds(
        steps, scheduler.alphas_cumprod, schedule="exponential", **common
    )
    expected = 2.0 * torch.exp(math.log(0.1) * steps.float() / 1000)
    torch.testing.assert_close(exponential, expected)
    snr = huber_thresholds(steps, scheduler.alphas_cumprod, schedule="snr", **common)
    alphas = scheduler.alphas_cumprod[steps]
    sigmas = ((1 - alphas) / alphas) ** 0.5
    torch.testing.assert_close(snr, 0.9 / (1 + sigmas) ** 2 + 0.1)
    assert snr[0] > snr[2]  # the threshold falls as the noise grows


def test_losses_match_their_formulas() -> None:
    prediction = torch.tensor([[[[0.0, 3.0]]], [[[1.0, 1.0]]]])
    target = torch.zeros_like(prediction)
    torch.testing.assert_close(per_sample_loss(prediction, target, "l2"), torch.tensor([4.5, 1.0]))
    torch.testing.assert_close(per_sample_loss(prediction, target, "l1"), torch.tensor([1.5, 1.0]))
    delta = torch.tensor([1.0, 0.5])
    huber = per_sample_loss(prediction, target, "huber", delta)
    pseudo = 2 * delta[0] * (math.sqrt(9 + 1) - 1) / 2
    torch.testing.assert_close(huber[0], torch.tensor(pseudo))
    smooth = per_sample_loss(prediction, target, "smooth_l1", delta)
    torch.testing.assert_close(smooth[1], torch.tensor(2 * (math.sqrt(1.25) - 0.5)))
    with pytest.raises(ValueError, match="Huber thresholds"):
        per_sample_loss(prediction, target, "huber")


def test_timesteps_stay_in_range() -> None:
    drawn = sample_timesteps(4000, 100, 900, generator=torch.Generator().manual_seed(0))
    assert int(drawn.min()) >= 100 and int(drawn.max()) < 900
    assert int(drawn.min()) < 110 and int(drawn.max()) > 890


def test_adaptive_noise_grows_with_the_mean_latent() -> None:
    noise = torch.zeros(2, 4, 8, 8)
    latents = torch.cat([torch.zeros(1, 4, 8, 8), torch.full((1, 4, 8, 8), 2.0)])
    out = adaptive_offset_noise(
        noise, latents, 0.0, 0.5, generator=torch.Generator().manual_seed(1)
    )
    draw = torch.randn((2, 4, 1, 1), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out[:, :, :1, :1], torch.tensor([0.0, 1.0]).view(2, 1, 1, 1) * draw)


def test_max_norm_scales_a_lora_down_to_the_limit() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 16))
    model = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["0", "1"]), model)
    with torch.no_grad():
        model[0].lora_B["default"].weight.fill_(1.0)
        model[1].lora_B["default"].weight.fill_(1e-4)
    small_before = model[1].get_delta_weight("default").clone()
    scaled, largest = apply_max_norm([model], 1.0)
    assert scaled == 1
    assert float(model[0].get_delta_weight("default").norm()) == pytest.approx(1.0, rel=1e-4)
    torch.testing.assert_close(model[1].get_delta_weight("default"), small_before)
    assert largest == pytest.approx(1.0, rel=1e-4)


def _subset(root: Path, name: str, sizes: list[tuple[int, int]], ext: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for index, size in enumerate(sizes):
        make_image(folder / f"{index}.png", size, seed=index)
        (folder / f"{index}{ext}").write_text(f"{name} caption {index}", encoding="utf-8")
    return folder


def test_dataset_config_file_with_two_resolutions_and_kohya_precedence(tmp_path: Path) -> None:
    small = _subset(tmp_path, "small", [(64, 64)] * 3, ".cap")
    large = _subset(tmp_path, "large", [(128, 128)] * 2, ".txt")
    (tmp_path / "ds.toml").write_text(
        f"""
[general]
caption_extension = ".txt"
shuffle_caption = false
keep_tokens = 2

[[datasets]]
resolution = 64
batch_size = 3
keep_tokens = 1
  [[datasets.subsets]]
  image_dir = "{small}"
  caption_extension = ".cap"
  num_repeats = 2

[[datasets]]
resolution = [128, 128]
batch_size = 1
  [[datasets.subsets]]
  image_dir = "{large}"
""",
        encoding="utf-8",
    )
    (tmp_path / "train.toml").write_text(
        """
pretrained_model_name_or_path = "/m"
output_dir = "/o"
dataset_config = "ds.toml"
max_train_epochs = 1
""",
        encoding="utf-8",
    )
    data = load_training_data(load_config(tmp_path / "train.toml"))
    by_dir = {r.path.parent.name: r for r in data.records}
    assert by_dir["small"].caption.startswith("small caption")  # subset .cap beats general
    assert by_dir["small"].rules.keep_tokens == 1  # dataset beats general
    assert by_dir["large"].rules.keep_tokens == 2  # general
    assert by_dir["small"].bucket == (64, 64) and by_dir["large"].bucket == (128, 128)
    # 3 small × 2 repeats in batches of 3, 2 large in batches of 1.
    assert data.batches_per_epoch() == 2 + 2
    assert all(
        len({data.records[i].dataset for i in batch}) == 1 for batch in data.epoch_batches(1, 0)
    )


def test_metadata_file_captions_as_kohyas_fine_tuning_json(tmp_path: Path) -> None:
    import json

    folder = tmp_path / "images"
    folder.mkdir()
    make_image(folder / "a.png", (64, 64), seed=0)
    make_image(folder / "b.jpg", (64, 64), seed=1)
    meta = tmp_path / "meta.json"
    entries = {
        "a": {"caption": "a red ball", "tags": "ball, red"},
        str(folder / "b.jpg"): {"tags": "dog"},
        "missing": {"caption": "nothing"},
    }
    meta.write_text(json.dumps(entries), encoding="utf-8")
    values = {
        "pretrained_model_name_or_path": "/m",
        "output_dir": "/o",
        "datasets": [{"subsets": [{"image_dir": str(folder), "metadata_file": str(meta)}]}],
    }
    with pytest.raises(DatasetError, match=r"meta\.json: no image for 'missing'"):
        load_training_data(build_config(values))
    del entries["missing"]
    meta.write_text(json.dumps(entries), encoding="utf-8")
    data = load_training_data(build_config(values))
    assert {r.path.name: r.caption for r in data.records} == {
        "a.png": "a red ball,ball, red",
        "b.jpg": "dog",
    }
    assert data.subsets[0].name == "images"
    with pytest.raises(ConfigError, match="dataset_config file not found"):
        build_config(
            {
                "pretrained_model_name_or_path": "/m",
                "output_dir": "/o",
                "dataset_config": str(tmp_path / "none.toml"),
            }
        )


class Steps(NullCallbacks):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_progress(self, progress: Progress) -> None:
        self.losses.append(progress.loss)


GUI_SHAPED = {
    "epoch": 1,
    "loss_type": "huber",
    "huber_c": 0.1,
    "huber_scale": 1,
    "huber_schedule": "snr",
    "min_timestep": 100,
    "max_timestep": 900,
    "max_token_length": 225,
    "noise_offset": 0.05,
    "adaptive_noise_scale": 0.01,
    "noise_offset_type": "Original",
    "scale_weight_norms": 0.05,
    "text_encoder_lr": [1e-3, 1e-3],
    "lr_scheduler": "cosine",
    "lr_scheduler_args": [],
    "color_aug": False,
    "random_crop": False,
    "full_fp16": False,
    "wandb_run_name": "tiny",
    "vae_batch_size": 0,
}


def test_a_gui_shaped_config_trains_on_the_tiny_model(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    values = base_values(tiny_model, dataset, tmp_path / "o", **GUI_SHAPED)
    values.pop("max_train_epochs")
    values.pop("learning_rate")
    values["unet_lr"] = 1e-2
    steps = Steps()
    result = train(build_config(values), steps)
    assert result.epoch == 1 and steps.losses and all(math.isfinite(v) for v in steps.losses)
    from safetensors.torch import load_file

    tensors = load_file(result.final_path)
    ups = [k for k in tensors if k.endswith("lora_up.weight")]
    assert ups
    for up in ups:
        down = tensors[up.replace("lora_up", "lora_down")].float()
        alpha = float(tensors[up.replace("lora_up.weight", "alpha")])
        delta = tensors[up].float().flatten(1) @ down.flatten(1) * alpha / down.shape[0]
        assert float(delta.norm()) <= 0.05 * 1.01  # scale_weight_norms held every module


def schedule_args(config: TrainConfig, total_steps: int = 10) -> dict[str, Any]:
    """build_scheduler's arguments as a run takes them from ``config``."""
    return {
        "name": config.lr_scheduler,
        "total_steps": total_steps,
        "warmup": 0,
        "num_cycles": config.lr_scheduler_num_cycles,
        "power": config.lr_scheduler_power,
        "scheduler_args": parse_key_values(config.lr_scheduler_args, "lr_scheduler_args"),
        "scheduler_type": config.lr_scheduler_type,
        "learning_rate": config.learning_rate,
    }


def test_lr_scheduler_type_and_args_build_torchs_schedule() -> None:
    from trainer.optim import build_scheduler

    config = build_config(
        {
            "pretrained_model_name_or_path": "/m",
            "train_data_dir": "/d",
            "output_dir": "/o",
            "learning_rate": 1.0,
            "lr_scheduler_type": "CosineAnnealingLR",
            "lr_scheduler_args": ["T_max=10", "eta_min=0.5"],
        }
    )
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = build_scheduler(**schedule_args(config), optimizer=optimizer)
    assert isinstance(schedule, torch.optim.lr_scheduler.CosineAnnealingLR)
    for _ in range(10):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    cosine = build_config(
        {
            **config.model_dump(),
            "lr_scheduler_type": None,
            "lr_scheduler": "cosine_with_restarts",
            "lr_scheduler_args": ["num_cycles=2"],
        }
    )
    with pytest.raises(ConfigError, match="lr_scheduler_args"):
        build_scheduler(
            **schedule_args(
                build_config({**cosine.model_dump(), "lr_scheduler_args": ["wibble=1"]})
            ),
            optimizer=optimizer,
        )


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_long_captions_are_encoded_in_75_token_windows(
    tiny_model: Path, tiny_sdxl_model: Path, dataset: Path, tmp_path: Path, family: str
) -> None:
    from trainer.models import load_base_model
    from trainer.text import text_encoder_fn

    model = tiny_model if family == "sd15" else tiny_sdxl_model
    short = build_config(base_values(model, dataset, tmp_path))
    long = build_config(base_values(model, dataset, tmp_path, max_token_length="225"))
    assert (
        build_config(base_values(model, dataset, tmp_path, max_token_length=75)).max_token_length
        is None
    )
    base = load_base_model(short)
    device = torch.device("cpu")
    captions = ["sks dog, red ball", ", ".join(f"tag{i}" for i in range(120))]
    one = text_encoder_fn(base, device, clip_skip=None, trained=False)(captions)
    three = text_encoder_fn(
        base, device, clip_skip=None, trained=False, max_token_length=long.max_token_length
    )(captions)
    assert three.hidden.shape[1] == 227 and one.hidden.shape[1] == 77
    # A short caption's first window is its ordinary encoding.
    torch.testing.assert_close(three.hidden[0, :76], one.hidden[0, :76])
    # A long caption's later windows carry the text beyond the first 75 tokens.
    assert not torch.allclose(three.hidden[1, 76:151], three.hidden[0, 76:151])
    if family == "sdxl":
        assert three.pooled is not None and three.pooled.shape == one.pooled.shape
        torch.testing.assert_close(three.pooled[0], one.pooled[0])


def test_save_every_n_steps_keeps_the_last_n_steps(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    extra = {"save_every_n_steps": 3, "save_last_n_steps": 2}
    result = train(build_config(base_values(tiny_model, dataset, tmp_path / "o", **extra)))
    assert result.global_step == 8
    names = sorted(p.name for p in (tmp_path / "o").glob("*.safetensors"))
    assert names == ["tiny-step00000006.safetensors", "tiny.safetensors"]

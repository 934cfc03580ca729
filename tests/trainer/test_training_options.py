"""Each training option runs on the tiny model and leaves its mark on the result."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.callbacks import NullCallbacks, Progress
from trainer.loop import train
from trainer.tiny import make_image


class Losses(NullCallbacks):
    def __init__(self) -> None:
        self.values: list[float] = []
        self.lrs: list[float] = []

    def on_progress(self, progress: Progress) -> None:
        self.values.append(progress.loss)
        self.lrs.append(progress.learning_rate)


OPTIONS = {
    "min-snr+offset+pyramid": {
        "min_snr_gamma": 5.0,
        "noise_offset": 0.1,
        "noise_offset_random_strength": True,
        "multires_noise_iterations": 3,
    },
    "debiased+zero-terminal-snr": {"debiased_estimation_loss": True, "zero_terminal_snr": True},
    "unet-only+checkpointing": {"network_train_unet_only": True, "gradient_checkpointing": True},
    "text-encoder+checkpointing": {"gradient_checkpointing": True, "text_encoder_lr": 1e-3},
    "adafactor+accumulation": {"optimizer_type": "Adafactor", "gradient_accumulation_steps": 2},
    "captions": {"shuffle_caption": True, "keep_tokens": 1, "caption_tag_dropout_rate": 0.3},
}


@pytest.mark.parametrize("extra", OPTIONS.values(), ids=OPTIONS.keys())
def test_option_trains(tiny_model: Path, dataset: Path, tmp_path: Path, extra: dict) -> None:
    losses = Losses()
    result = train(
        build_config(base_values(tiny_model, dataset, tmp_path / "o", max_train_epochs=1, **extra)),
        losses,
    )
    expected_steps = 2 if extra.get("gradient_accumulation_steps") == 2 else 4
    assert result.global_step == expected_steps
    assert losses.values and all(math.isfinite(v) for v in losses.values)
    tensors = load_file(result.final_path)
    # LoRA "up" starts at zero: any non-zero value shows the optimizer moved it.
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith("lora_up.weight"))
    te_up = [t for k, t in tensors.items() if k.startswith("lora_te_") and "lora_up" in k]
    if extra.get("network_train_unet_only", False):
        assert te_up == []
    else:
        assert te_up and any(t.abs().sum() > 0 for t in te_up)  # the TE LoRA learnt too
    if extra.get("optimizer_type"):
        meta = safe_open(str(result.final_path), "pt").metadata()
        assert meta["ss_optimizer"].startswith(
            f"transformers.optimization.{extra['optimizer_type']}"
        )


def test_v_prediction_base(tiny_vpred_model: Path, dataset: Path, tmp_path: Path) -> None:
    result = train(
        build_config(
            base_values(
                tiny_vpred_model, dataset, tmp_path / "o", max_train_epochs=1, min_snr_gamma=5
            )
        )
    )
    with safe_open(str(result.final_path), "pt") as handle:
        meta = handle.metadata()
    assert meta["ss_v_parameterization"] == "True"
    assert meta["modelspec.prediction_type"] == "v"


def test_warmup_and_schedule(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    losses = Losses()
    train(
        build_config(
            base_values(
                tiny_model,
                dataset,
                tmp_path / "o",
                lr_scheduler="constant",
                lr_warmup_steps=0.5,  # a ratio: half of the 8 steps
                learning_rate=1e-3,
            )
        ),
        losses,
    )
    assert losses.lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert losses.lrs[4:] == pytest.approx([1e-3] * 4)


def test_regularisation_run(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    reg = tmp_path / "reg" / "1_dog"
    reg.mkdir(parents=True)
    make_image(reg / "r.png", (64, 64), seed=3)
    (reg / "r.txt").write_text("dog")
    result = train(
        build_config(
            base_values(
                tiny_model,
                dataset,
                tmp_path / "o",
                max_train_epochs=1,
                reg_data_dir=str(tmp_path / "reg"),
                prior_loss_weight=0.5,
            )
        )
    )
    # 8 train + 8 reg samples: the 64² bucket holds 4 + 8 (6 batches), 96×32 holds 4 (2).
    assert result.global_step == 8
    meta = safe_open(str(result.final_path), "pt").metadata()
    assert meta["ss_num_reg_images"] == "1"
    assert meta["ss_reg_dataset_dirs"] == '{"1_dog": {"n_repeats": 1, "img_count": 1}}'
    assert meta["ss_prior_loss_weight"] == "0.5"


def test_bf16_autocast_trains_saves_bf16_and_samples(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    """Half-precision UNet/TE with the fp32 VAE: the LoRA learns, is saved in bf16, and
    samples still decode."""
    import torch

    prompts = tmp_path / "p.txt"
    prompts.write_text("sks dog --s 2 --w 64 --h 64\n")
    losses = Losses()
    result = train(
        build_config(
            base_values(
                tiny_model,
                dataset,
                tmp_path / "o",
                max_train_epochs=1,
                mixed_precision="bf16",
                save_precision="bf16",
                sample_prompts=str(prompts),
                sample_every_n_epochs=1,
            )
        ),
        losses,
    )
    assert result.global_step == 4
    assert losses.values and all(math.isfinite(v) for v in losses.values)
    tensors = load_file(result.final_path)
    ups = {k: t for k, t in tensors.items() if k.endswith("lora_up.weight")}
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}  # save_precision
    assert any(t.abs().sum() > 0 for k, t in ups.items() if k.startswith("lora_unet_"))
    assert any(t.abs().sum() > 0 for k, t in ups.items() if k.startswith("lora_te_"))
    assert (result.output_dir / "sample" / "tiny_e000001_00_1234.png").exists()


def test_max_train_steps_stops_mid_epoch(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    values = base_values(tiny_model, dataset, tmp_path / "o", max_train_steps=5)
    del values["max_train_epochs"]
    result = train(build_config(values))
    assert (result.global_step, result.epoch) == (5, 1)  # one full epoch of 4, then 1 step
    meta = safe_open(str(result.final_path), "pt").metadata()
    assert (meta["ss_steps"], meta["ss_epoch"], meta["ss_num_epochs"]) == ("5", "2", "2")


def test_missing_optimizer_package_is_a_clear_error(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    import importlib.util

    from trainer.errors import ConfigError

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    config = build_config(
        base_values(tiny_model, dataset, tmp_path / "o", optimizer_type="AdamW8bit")
    )
    statuses: list[str] = []

    class Statuses(NullCallbacks):
        def on_status(self, status: str, detail: str = "") -> None:
            statuses.append(status)

    with pytest.raises(ConfigError, match="needs the 'bitsandbytes' package"):
        train(config, Statuses())
    assert statuses == []  # refused before loading the model or caching anything

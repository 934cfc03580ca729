"""The peak-memory estimate and the refusal to start a run that would not fit,
exercised on the CPU with a fake device budget (``memory_budget_gb``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.callbacks import NullCallbacks
from trainer.loop import train
from trainer.speed import (
    ACTIVATION_ELEMENTS_PER_UNIT,
    MemoryBudgetError,
    MemoryEstimate,
    check_memory_budget,
    unet_activation_units,
)

SD15_UNET = {
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "transformer_layers_per_block": 1,
}
SDXL_UNET = {
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "transformer_layers_per_block": [1, 2, 10],
}


def test_activation_units_follow_the_unet_shape() -> None:
    # SD1.5 at 512² (64² latents): levels at 64², 32², 16² with attention, 8² without.
    units = unet_activation_units(SD15_UNET, 64 * 64)
    assert units == 4096 * 320 * 2 + 1024 * 640 * 2 + 256 * 1280 * 2 + 64 * 1280
    gib = units * ACTIVATION_ELEMENTS_PER_UNIT * 2 / 2**30
    assert 3.5 < gib < 4.5  # the calibration point: ≈4 GiB in fp16 at batch 1
    # SDXL at 1024²: the deep 10-block level dominates; several times SD1.5's.
    sdxl = unet_activation_units(SDXL_UNET, 128 * 128)
    assert sdxl == 16384 * 320 + 4096 * 640 * 3 + 1024 * 1280 * 11
    assert unet_activation_units(SD15_UNET, 4 * 64 * 64) == pytest.approx(4 * units, rel=0.01)


def _refusal(tiny_model: Path, dataset: Path, tmp_path: Path, **extra: object) -> str:
    statuses: list[str] = []

    class Statuses(NullCallbacks):
        def on_status(self, status: str, detail: str = "") -> None:
            statuses.append(status)

    config = build_config(
        base_values(tiny_model, dataset, tmp_path / "out", memory_budget_gb=0.001, **extra)
    )
    with pytest.raises(MemoryBudgetError) as caught:
        train(config, Statuses())
    assert "training" not in statuses  # refused before the first step
    assert not list((tmp_path / "out").glob("*.safetensors"))
    return str(caught.value)


def test_a_run_over_budget_is_refused_with_what_to_turn_on(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    message = _refusal(tiny_model, dataset, tmp_path, cache_latents=False)
    assert "0.0 GiB" in message and "spill" in message
    for advice in ("gradient_checkpointing = true", "mixed_precision = 'bf16'", "cache_latents"):
        assert advice in message
    message = _refusal(
        tiny_model, dataset, tmp_path / "b", gradient_checkpointing=True, mixed_precision="bf16"
    )
    assert "gradient_checkpointing" not in message and "mixed_precision" not in message
    assert "train_batch_size below 2" in message


def test_a_run_within_budget_trains(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    config = build_config(
        base_values(
            tiny_model,
            dataset,
            tmp_path / "o",
            memory_budget_gb=4,
            max_train_epochs=None,
            max_train_steps=1,  # the budget is checked before the first step
        )
    )
    assert train(config).global_step == 1


def test_estimate_parts_add_up_and_the_check_compares_the_total() -> None:
    estimate = MemoryEstimate(weights=3 << 30, trainable=1 << 28, activations=2 << 30)
    assert estimate.total == (3 << 30) + (1 << 28) + (2 << 30) + (1 << 30)
    config = build_config(
        {
            "pretrained_model_name_or_path": "x/y",
            "train_data_dir": "d",
            "output_dir": "o",
            "max_train_epochs": 1,
        }
    )
    check_memory_budget(estimate, estimate.total, config)  # exactly fits
    check_memory_budget(estimate, None, config)  # no known limit (CPU)
    with pytest.raises(MemoryBudgetError, match=r"6\.2 GiB but the device has 6\.0 GiB"):
        check_memory_budget(estimate, 6 << 30, config)


def test_cached_frozen_text_encoders_are_not_counted(
    tiny_sdxl_model: Path, dataset: Path, tmp_path: Path
) -> None:
    from trainer.data import load_training_data
    from trainer.models import load_base_model
    from trainer.speed import estimate_peak_memory

    def estimate(**extra: object) -> MemoryEstimate:
        config = build_config(base_values(tiny_sdxl_model, dataset, tmp_path, **extra))
        base = load_base_model(config)
        return estimate_peak_memory(base, config, load_training_data(config), trainable_count=0)

    frozen = estimate(network_train_unet_only=True)
    trained = estimate(text_encoder_lr=1e-4)
    base = load_base_model(build_config(base_values(tiny_sdxl_model, dataset, tmp_path)))
    encoders = sum(
        p.numel() for e in (base.text_encoder, base.text_encoder_2) for p in e.parameters()
    )
    assert trained.weights - frozen.weights == encoders * 4  # fp32 here: 4 bytes each
    assert estimate(train_batch_size=4, network_train_unet_only=True).activations == pytest.approx(
        2 * frozen.activations, rel=1e-6
    )

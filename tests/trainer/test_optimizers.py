"""Each optimizer trains a few steps on the tiny model and saves a file that loads back."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.loop import train
from trainer.tiny import merge_kohya_lora

# (optimizer_type, learning_rate, optimizer_args, package) — the guides' settings.
OPTIMIZERS = [
    ("AdamW", 1e-3, ["weight_decay=0.12", "betas=0.9,0.99"], None),
    ("AdamW", 1e-3, ["foreach=True"], None),
    ("Adafactor", 1e-3, [], None),
    ("Lion", 1e-4, ["weight_decay=0.01"], "lion_pytorch"),
    # Prodigy as the guides run it: lr 1, decoupled weight decay, safeguarded warmup.
    (
        "Prodigy",
        1.0,
        ["decouple=True", "weight_decay=0.01", "betas=0.9,0.99", "use_bias_correction=True"],
        "prodigyopt",
    ),
    ("DAdaptAdam", 1.0, ["decouple=True", "weight_decay=0.01"], "dadaptation"),
    ("AdamW8bit", 1e-3, [], "bitsandbytes"),
]


@pytest.mark.parametrize(
    ("name", "lr", "args", "package"),
    OPTIMIZERS,
    ids=[f"{o[0]}-{i}" for i, o in enumerate(OPTIMIZERS)],
)
def test_optimizer_trains_and_saves(
    name: str, lr: float, args: list[str], package: str | None, tiny_model: Path, dataset: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    config = build_config(
        base_values(
            tiny_model,
            dataset,
            tmp_path / "out",
            optimizer_type=name,
            optimizer_args=args,
            learning_rate=lr,
            max_train_steps=3,
            max_train_epochs=None,
            network_train_unet_only=True,
        )
    )
    result = train(config)
    assert result.global_step == 3
    tensors = load_file(result.final_path)
    ups = [t for k, t in tensors.items() if k.endswith("lora_up.weight")]
    assert max(float(t.abs().max()) for t in ups) > 0  # B starts at zero: the optimizer moved it

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    pipe.load_lora_weights(str(result.final_path), adapter_name="o")
    merged = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    merge_kohya_lora(merged, tensors)
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        loaded = pipe.unet(sample, torch.tensor([500]), context).sample
        expected = merged(sample, torch.tensor([500]), context).sample
    torch.testing.assert_close(loaded, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("scheduler", "extra"),
    [
        ("cosine_with_restarts", {"lr_scheduler_num_cycles": 2}),
        ("polynomial", {"lr_scheduler_power": 2.0}),
    ],
)
def test_schedules_with_warmup_ratio(
    scheduler: str, extra: dict, tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    from trainer.callbacks import NullCallbacks, Progress

    rates: list[float] = []

    class Rates(NullCallbacks):
        def on_progress(self, progress: Progress) -> None:
            rates.append(progress.learning_rate)

    config = build_config(
        base_values(
            tiny_model,
            dataset,
            tmp_path / "out",
            lr_scheduler=scheduler,
            lr_warmup_steps=0.25,  # a ratio: 2 of 8 steps
            max_train_epochs=2,
            network_train_unet_only=True,
            **extra,
        )
    )
    train(config, Rates())
    assert len(rates) == 8
    # The rate reported after optimizer step n is the schedule at n (warmup 2, total 8).
    peak, warmup, total = 1e-3, 2, 8

    def expected(n: int) -> float:
        if n < warmup:
            return peak * n / warmup
        progress = (n - warmup) / (total - warmup)
        if scheduler == "cosine_with_restarts":
            if progress >= 1:
                return 0.0
            return peak * 0.5 * (1 + math.cos(math.pi * ((2 * progress) % 1)))
        lr_end = 1e-7  # diffusers' polynomial default
        return (peak - lr_end) * (1 - progress) ** 2 + lr_end

    assert rates == pytest.approx([expected(n) for n in range(1, 9)])
    assert rates[0] < rates[1] == pytest.approx(peak)
    if scheduler == "cosine_with_restarts":
        assert rates[3] < rates[4] == pytest.approx(peak)  # the restart, halfway

"""Resume is exact for the LyCORIS network types and for SDXL too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lab.training.config import TrainConfig, build_config
from tests.trainer.conftest import base_values
from tests.trainer.test_resume import Recorder, StopAfter
from trainer.loop import train

OPTIONS = {
    # Three epochs: stopped mid-epoch 2, the resumed run still crosses an epoch boundary
    # (a new shuffle) before it ends.
    "max_train_epochs": 3,
    "lr_scheduler": "cosine",
    "lr_warmup_steps": 2,
    "shuffle_caption": True,
    "flip_aug": True,  # SDXL: the crop conditioning mirrors with the flip
    "noise_offset": 0.05,
    "text_encoder_lr": 1e-3,
}
CASES = {
    "sd15-loha-dropouts": (
        "tiny_model",
        ["algo=loha", "conv_dim=2", "rank_dropout=0.1", "module_dropout=0.1"],
    ),
    "sdxl-lokr": ("tiny_sdxl_model", ["algo=lokr", "factor=4"]),
    "sdxl-dora": ("tiny_sdxl_model", ["algo=lora", "dora_wd=True"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stop_and_resume_equals_a_straight_run(
    case: str, dataset: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fixture, args = CASES[case]
    model = request.getfixturevalue(fixture)

    def config(out: str, **extra: object) -> TrainConfig:
        return build_config(
            base_values(
                model,
                dataset,
                tmp_path / out,
                network_module="lycoris.kohya",
                network_args=args,
                **OPTIONS,
                **extra,
            )
        )

    reference = train(config("a"))
    commands = StopAfter(6)  # mid-epoch (4 batches per epoch)
    stopped = train(config("b"), Recorder(commands), commands)
    assert stopped.stopped and stopped.global_step == 6
    resumed = train(config("b", resume=str(stopped.state_dir)))
    assert (resumed.global_step, resumed.epoch) == (reference.global_step, reference.epoch)
    assert (reference.global_step, reference.epoch) == (12, 3)
    expected, actual = load_file(reference.final_path), load_file(resumed.final_path)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=1e-5)

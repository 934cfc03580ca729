"""An interrupted and resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.callbacks import NeverStop, NullCallbacks, Progress
from trainer.errors import ResumeError
from trainer.loop import TrainResult, train
from trainer.tiny import build_dataset, write_toml


class StopAfter(NeverStop):
    """Commands that ask to stop once ``steps`` optimizer steps have been reported."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.seen = 0

    def should_stop(self) -> bool:
        return self.seen >= self.steps


class Recorder(NullCallbacks):
    def __init__(self, commands: StopAfter | None = None) -> None:
        self.progress: list[Progress] = []
        self.commands = commands

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)
        if self.commands is not None:
            self.commands.seen = progress.step


# Shuffled captions, flips, dropout and a cosine schedule with warmup: every source of
# randomness and every piece of optimizer/scheduler state must be restored.
RANDOM_OPTIONS = {
    "max_train_epochs": 4,
    "lr_scheduler": "cosine",
    "lr_warmup_steps": 2,
    "shuffle_caption": True,
    "caption_dropout_rate": 0.2,
    "flip_aug": True,
    "network_dropout": 0.1,
    "noise_offset": 0.05,
    "min_snr_gamma": 5.0,
}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


@pytest.fixture(scope="module")
def shared_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset for the straight run and every interrupted one (none of them writes it)."""
    return build_dataset(tmp_path_factory.mktemp("resume") / "data")


@pytest.fixture(scope="module")
def straight_run(
    tiny_model: Path, shared_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainResult:
    """The uninterrupted run each interrupted-and-resumed one must end equal to."""
    out = tmp_path_factory.mktemp("straight")
    reference = train(build_config(base_values(tiny_model, shared_dataset, out, **RANDOM_OPTIONS)))
    assert (reference.global_step, reference.epoch) == (16, 4)
    return reference


@pytest.mark.parametrize("stop_after", [4, 6], ids=["epoch-boundary", "mid-epoch"])
def test_resume_matches_an_uninterrupted_run(
    tiny_model: Path, shared_dataset: Path, straight_run: TrainResult, tmp_path: Path,
    stop_after: int,
) -> None:  # fmt: skip
    dataset, reference = shared_dataset, straight_run

    commands = StopAfter(stop_after)
    interrupted_config = build_config(
        base_values(tiny_model, dataset, tmp_path / "b", **RANDOM_OPTIONS)
    )
    interrupted = train(interrupted_config, Recorder(commands), commands)
    assert interrupted.stopped and interrupted.final_path is None
    assert interrupted.global_step == stop_after
    assert interrupted.state_dir is not None and interrupted.state_dir.is_dir()

    resumed_config = build_config(
        base_values(
            tiny_model,
            dataset,
            tmp_path / "b",
            resume=str(interrupted.state_dir),
            **RANDOM_OPTIONS,
        )
    )
    recorder = Recorder()
    resumed = train(resumed_config, recorder)
    assert (resumed.global_step, resumed.epoch) == (reference.global_step, reference.epoch)
    # The counters continue rather than restart.
    assert recorder.progress[0].step == stop_after + 1
    assert recorder.progress[-1].epoch == 4

    expected, actual = _weights(reference.final_path), _weights(resumed.final_path)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=1e-5)


def test_cli_resume_continues_a_finished_run(tiny_model: Path, dataset: Path, tmp_path: Path):
    """Train 2 epochs, keep the state, then `--resume` it to 4 epochs via the CLI."""
    from loralab.cli import main

    values = base_values(tiny_model, dataset, tmp_path / "out", save_state_on_train_end=True)
    config = write_toml(tmp_path / "train.toml", values)
    runner = CliRunner()
    first = runner.invoke(main, ["train", str(config), "--quiet"])
    assert first.exit_code == 0, first.output
    state = tmp_path / "out" / "tiny-state"
    assert (state / "state.json").exists()

    second = runner.invoke(
        main, ["train", str(config), "--quiet", "--resume", str(state), "max_train_epochs=4"]
    )
    assert second.exit_code == 0, second.output
    assert "done: 16 steps, 4 epochs" in second.output

    straight = train(
        build_config({**values, "output_dir": str(tmp_path / "s"), "max_train_epochs": 4})
    )
    resumed_file = tmp_path / "out" / "tiny.safetensors"
    expected, actual = _weights(straight.final_path), _weights(resumed_file)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=1e-6, rtol=1e-5)


def test_resume_refuses_a_state_of_another_shape(tiny_model: Path, dataset: Path, tmp_path: Path):
    values = base_values(tiny_model, dataset, tmp_path / "out", max_train_epochs=1)
    first = train(build_config({**values, "save_state_on_train_end": True}))
    other = build_config({**values, "network_dim": 8, "resume": str(first.state_dir)})
    with pytest.raises(ResumeError, match="network_dim"):
        train(other)

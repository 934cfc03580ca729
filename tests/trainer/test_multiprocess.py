"""One job on several processes (gloo on CPUs): the same weights as one process with the
whole batch, only rank 0 reports and writes, and a state resumes across process counts.

The ranks of the first tests are forked from this process (torch is already imported,
so they start at once) with the environment ``accelerate launch`` gives; the launcher
test starts real ``python -m trainer.launch`` processes, as the worker does.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.callbacks import Checkpoint, NeverStop, NullCallbacks, Progress
from trainer.distributed import batch_share
from trainer.launch import LaunchError, launch
from trainer.loop import TrainResult, train
from trainer.tiny import build_dataset

# Flips, shuffled captions, offset noise and min-SNR: every per-sample draw must land on
# the same sample whichever rank trains it.
OPTIONS = {
    "max_train_epochs": 2,
    "flip_aug": True,
    "shuffle_caption": True,
    "noise_offset": 0.05,
    "min_snr_gamma": 5.0,
}
GLOBAL_BATCH = 2
STEPS = 8  # 8 samples per epoch (4 images × 2 repeats) in batches of 2, 2 epochs
# AdamW divides by √v, so float-rounding differences in the gradients reach the weights
# at ~1e-5 after a few steps; a wrong split moves them by ~lr (1e-3): see the last check.
ATOL, RTOL = 1e-4, 1e-3


class Counting(NullCallbacks):
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.steps: list[int] = []

    def on_progress(self, progress: Progress) -> None:
        self.calls["progress"] += 1
        self.steps.append(progress.step)

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.calls["checkpoint"] += 1

    def on_status(self, status: str, detail: str = "") -> None:
        self.calls["status"] += 1

    def on_state(self, path: Path, epoch: int, step: int) -> None:
        self.calls["state"] += 1


class StopAt(NeverStop):
    """Stop once ``steps`` steps are reported (the report comes before the next poll)."""

    def __init__(self, callbacks: Counting, steps: int) -> None:
        self.callbacks, self.steps = callbacks, steps

    def should_stop(self) -> bool:
        return len(self.callbacks.steps) >= self.steps


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank: int, world: int, port: int, values: dict, report: Path, stop: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
    )
    callbacks = Counting()
    commands = StopAt(callbacks, stop) if stop else NeverStop()
    result = train(build_config(values), callbacks, commands)
    torch.distributed.destroy_process_group()
    report.write_text(
        json.dumps(
            {
                "calls": callbacks.calls,
                "steps": callbacks.steps,
                "global_step": result.global_step,
                "stopped": result.stopped,
                "final": str(result.final_path) if result.final_path else None,
                "state": str(result.state_dir) if result.state_dir else None,
            }
        )
    )


def _forked_ranks(tmp: Path, values_of, *, world: int = 2, stop: int = 0) -> list[dict]:
    """Run ``world`` forked ranks; rank r trains ``values_of(r)``; their reports."""
    fork = multiprocessing.get_context("fork")
    port = _free_port()
    reports = [tmp / f"rank{r}.json" for r in range(world)]
    ranks = [
        fork.Process(target=_rank, args=(r, world, port, values_of(r), reports[r], stop))
        for r in range(world)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=600)
    assert [p.exitcode for p in ranks] == [0] * world
    return [json.loads(r.read_text()) for r in reports]


def _assert_same_weights(actual_path: Path | str, expected_path: Path | str) -> None:
    actual, expected = load_file(actual_path), load_file(expected_path)
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("multi") / "data")


@pytest.fixture(scope="module")
def one_process(
    tiny_model: Path, data: Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainResult:
    """The reference: one process, the whole batch of 2."""
    out = tmp_path_factory.mktemp("one")
    values = base_values(tiny_model, data, out, train_batch_size=GLOBAL_BATCH, **OPTIONS)
    result = train(build_config(values))
    assert result.global_step == STEPS
    return result


def test_batch_share_splits_a_global_batch_evenly_and_pads_an_empty_rank() -> None:
    assert [batch_share(4, r, 2).positions for r in range(2)] == [[0, 1], [2, 3]]
    assert [batch_share(3, r, 2).positions for r in range(2)] == [[0, 1], [2]]
    lonely = [batch_share(1, r, 2) for r in range(2)]
    assert [(s.positions, s.padding) for s in lonely] == [([0], False), ([0], True)]
    with pytest.raises(ValueError, match="rank 2 is outside a world of 2"):
        batch_share(4, 2, 2)


def test_two_processes_train_the_weights_of_one_with_the_whole_batch(
    tiny_model: Path, data: Path, one_process: TrainResult, tmp_path: Path
) -> None:
    # Each rank gets its own output folder: whatever rank 1 wrote would show there.
    def values_of(rank: int) -> dict:
        return base_values(tiny_model, data, tmp_path / f"out{rank}", train_batch_size=1, **OPTIONS)

    rank0, rank1 = _forked_ranks(tmp_path, values_of)
    assert rank0["global_step"] == rank1["global_step"] == STEPS
    _assert_same_weights(rank0["final"], one_process.final_path)

    # Only rank 0 reports and writes; it reports every step once.
    assert rank1["calls"] == {} and rank1["final"] is None
    assert [p.name for p in (tmp_path / "out1").iterdir()] == []
    assert rank0["steps"] == list(range(1, STEPS + 1))
    assert rank0["calls"]["checkpoint"] == 1

    # The tolerance tells a right split from a wrong one: batch 1 on one process trains
    # on other batches and ends far outside it.
    alone = train(build_config(values_of(0) | {"output_dir": str(tmp_path / "alone")}))
    with pytest.raises(AssertionError):
        _assert_same_weights(alone.final_path, one_process.final_path)


def test_a_two_process_stop_resumes_on_one_process(
    tiny_model: Path, data: Path, one_process: TrainResult, tmp_path: Path
) -> None:
    out = tmp_path / "out"

    def values_of(rank: int) -> dict:
        return base_values(tiny_model, data, out, train_batch_size=1, **OPTIONS)

    rank0, rank1 = _forked_ranks(tmp_path, values_of, stop=3)
    assert rank0["stopped"] and rank1["stopped"]
    assert rank0["global_step"] == rank1["global_step"] == 3
    assert rank0["calls"]["state"] == 1 and rank1["state"] is None
    state = Path(rank0["state"])
    assert json.loads((state / "state.json").read_text())["shape"]["batch_size"] == GLOBAL_BATCH

    # The global batch is the same, so the state resumes on one process with batch 2.
    values = base_values(
        tiny_model, data, out, train_batch_size=GLOBAL_BATCH, resume=str(state), **OPTIONS
    )
    resumed = train(build_config(values))
    assert resumed.global_step == STEPS
    _assert_same_weights(resumed.final_path, one_process.final_path)


def test_the_launcher_resumes_a_state_on_two_processes_and_relays_rank_0(
    tiny_model: Path, data: Path, one_process: TrainResult, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = Counting()
    stopped = train(
        build_config(base_values(tiny_model, data, out, train_batch_size=GLOBAL_BATCH, **OPTIONS)),
        first,
        StopAt(first, 5),
    )
    assert stopped.stopped and stopped.state_dir is not None

    callbacks = Counting()
    values = base_values(
        tiny_model, data, out, train_batch_size=1, resume=str(stopped.state_dir), **OPTIONS
    )
    resumed = launch(build_config(values), 2, callbacks)
    assert resumed.global_step == STEPS and resumed.final_path is not None
    _assert_same_weights(resumed.final_path, one_process.final_path)
    # Every rank relays its callbacks; the steps arrive once each, from rank 0.
    assert callbacks.steps == list(range(6, STEPS + 1))
    assert callbacks.calls["checkpoint"] == 1


def test_the_launcher_raises_a_rank_s_error_and_ends_the_others(
    tiny_model: Path, data: Path, tmp_path: Path
) -> None:
    values = base_values(tiny_model, data, tmp_path / "out", resume=str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match="not a training state") as raised:
        launch(build_config(values), 2)
    assert not isinstance(raised.value, LaunchError)  # the rank's own ResumeError

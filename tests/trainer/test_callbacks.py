"""The loop reports through the callbacks; the console bar shows loss, it/s and ETA."""

from __future__ import annotations

import io
from pathlib import Path

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.callbacks import Callbacks, Checkpoint, ConsoleCallbacks, NullCallbacks, Progress
from trainer.loop import train


class Recorder(NullCallbacks):
    def __init__(self) -> None:
        self.progress: list[Progress] = []
        self.statuses: list[str] = []
        self.checkpoints: list[Checkpoint] = []
        self.samples: list[tuple[list[Path], int]] = []

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)

    def on_status(self, status: str, detail: str = "") -> None:
        self.statuses.append(status)

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.checkpoints.append(checkpoint)

    def on_sample(self, paths: list[Path], epoch: int, step: int) -> None:
        self.samples.append((paths, epoch))


def test_callbacks_see_every_step_checkpoint_and_sample(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "# comment\nsks dog --w 64 --h 32 --d 7 --s 2 --l 4\nsks cat --n blurry --s 2\n"
    )
    config = build_config(
        base_values(
            tiny_model,
            dataset,
            tmp_path / "out",
            save_every_n_epochs=1,
            sample_prompts=str(prompts),
            sample_every_n_epochs=1,
            clip_skip=2,
        )
    )
    recorder = Recorder()
    assert isinstance(recorder, Callbacks)
    train(config, recorder)

    assert [p.step for p in recorder.progress] == list(range(1, 9))
    assert [p.epoch for p in recorder.progress] == [1] * 4 + [2] * 4
    last = recorder.progress[-1]
    assert last.total_steps == 8 and last.total_epochs == 2 and last.eta_seconds == 0
    assert last.steps_per_second > 0 and last.images_per_second > 0
    assert recorder.statuses[0] == "loading" and recorder.statuses[-1] == "finished"
    assert [(c.epoch, c.final) for c in recorder.checkpoints] == [(1, False), (2, True)]

    assert [epoch for _, epoch in recorder.samples] == [1, 2]
    first_epoch = recorder.samples[0][0]
    assert [p.name for p in first_epoch] == ["tiny_e000001_00_7.png", "tiny_e000001_01_1235.png"]
    from PIL import Image

    with Image.open(first_epoch[0]) as image:
        assert image.size == (64, 32)
    # The labelled grid holds both epochs side by side (2 columns of 256 px + labels).
    grid = tmp_path / "out" / "sample" / "tiny_grid.png"
    with Image.open(grid) as image:
        assert image.width > 2 * 256 and image.height > 2 * 256


def test_commands_can_ask_for_a_state_mid_run(tiny_model: Path, dataset: Path, tmp_path: Path):
    class StateAtStep3:
        def __init__(self) -> None:
            self.calls = 0

        def should_stop(self) -> bool:
            return False

        def should_save_state(self) -> bool:
            self.calls += 1
            return self.calls == 4  # polled before the 4th step: 3 steps done

    class States(NullCallbacks):
        def __init__(self) -> None:
            self.states: list[tuple[Path, int, int]] = []

        def on_state(self, path: Path, epoch: int, step: int) -> None:
            self.states.append((path, epoch, step))

    states = States()
    config = build_config(base_values(tiny_model, dataset, tmp_path / "out", max_train_epochs=1))
    train(config, states, StateAtStep3())
    assert [(p.name, e, s) for p, e, s in states.states] == [("tiny-state", 0, 3)]
    assert (tmp_path / "out" / "tiny-state" / "state.json").exists()


def test_console_bar_shows_loss_rate_and_eta() -> None:
    stream = io.StringIO()
    console = ConsoleCallbacks(stream)
    for step in range(1, 4):
        console.on_progress(Progress(step, 10, 1, 2, 0.5, 0.25, 1e-4, 2.0, 4.0, (10 - step) / 2.0))
    console.on_status("finished", "done")
    text = stream.getvalue()
    assert "loss=0.2500" in text
    assert "it/s" in text or "s/it" in text
    assert "3/10" in text and "<" in text  # tqdm's elapsed<remaining
    assert "[finished] done" in text

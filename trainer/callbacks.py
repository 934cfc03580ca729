"""The trainer's only link to the outside: a callbacks object and a commands object.

The loop reports through :class:`Callbacks` and polls :class:`Commands`; the CLI
implements them with a tqdm bar, the Celery worker against the database. Nothing in
the loop knows which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from tqdm import tqdm

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Progress:
    """One optimizer step's report."""

    step: int
    total_steps: int
    epoch: int
    """1-based epoch the step belongs to."""
    total_epochs: int
    loss: float
    """Loss of this step."""
    average_loss: float
    """Mean loss over the current epoch so far (what kohya shows as ``avr_loss``)."""
    learning_rate: float
    steps_per_second: float
    images_per_second: float
    eta_seconds: float


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A LoRA file just written."""

    path: Path
    epoch: int
    step: int
    final: bool
    compat_path: Path | None = None
    """DoRA: the plain-LoRA fit saved beside ``path`` for apps that misread DoRA."""


@runtime_checkable
class Callbacks(Protocol):
    """What the trainer reports. Implementations must return quickly (they run in-loop)."""

    def on_progress(self, progress: Progress) -> None: ...

    def on_sample(self, paths: list[Path], epoch: int, step: int) -> None: ...

    def on_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def on_status(self, status: str, detail: str = "") -> None:
        """``status`` is one of: loading, caching, training, saving, sampling, warning,
        stopped, finished; ``detail`` is a human-readable line."""

    def on_state(self, path: Path, epoch: int, step: int) -> None:
        """A resumable state directory was just written (the worker stores it);
        ``epoch`` counts completed epochs."""


@runtime_checkable
class Commands(Protocol):
    """What the trainer asks between steps."""

    def should_stop(self) -> bool:
        """True to stop after the current step; the run saves a resumable state."""

    def should_save_state(self) -> bool:
        """True to write a resumable state now (periodic saves, besides per epoch).
        Optional: a commands object without this method is never asked."""


class NullCallbacks:
    """Reports nothing."""

    def on_progress(self, progress: Progress) -> None:
        pass

    def on_sample(self, paths: list[Path], epoch: int, step: int) -> None:
        pass

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        pass

    def on_status(self, status: str, detail: str = "") -> None:
        pass

    def on_state(self, path: Path, epoch: int, step: int) -> None:
        pass


class NeverStop:
    """Runs to the end."""

    def should_stop(self) -> bool:
        return False

    def should_save_state(self) -> bool:
        return False


class ConsoleCallbacks(NullCallbacks):
    """A tqdm bar (loss, lr, it/s, ETA) and status lines, for the command line."""

    def __init__(self, file: IO[str] | None = None, *, disable: bool = False) -> None:
        self._file = file
        self._disable = disable
        self._bar: tqdm | None = None

    def on_progress(self, progress: Progress) -> None:
        if self._bar is None:
            self._bar = tqdm(
                total=progress.total_steps,
                initial=progress.step - 1,
                desc="steps",
                unit="it",
                file=self._file,
                disable=self._disable,
                dynamic_ncols=True,
            )
        self._bar.set_postfix(
            epoch=f"{progress.epoch}/{progress.total_epochs}",
            loss=f"{progress.average_loss:.4f}",
            lr=f"{progress.learning_rate:.2e}",
            refresh=False,
        )
        self._bar.update(progress.step - self._bar.n)

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._write(f"saved {checkpoint.path} (epoch {checkpoint.epoch}, step {checkpoint.step})")

    def on_sample(self, paths: list[Path], epoch: int, step: int) -> None:
        self._write(f"samples for epoch {epoch}: {len(paths)} images in {paths[0].parent}")

    def on_status(self, status: str, detail: str = "") -> None:
        if status in ("stopped", "finished") and self._bar is not None:
            self._bar.close()
            self._bar = None
        self._write(f"[{status}] {detail}".rstrip())

    def _write(self, line: str) -> None:
        if self._disable:
            return
        tqdm.write(line, file=self._file)

"""Which LoRA files a run writes and keeps between its start and its final file.

kohya's options: ``save_every_n_epochs`` writes ``<name>-<epoch>.safetensors`` and
``save_last_n_epochs`` keeps the newest N of them; ``save_every_n_steps`` writes
``<name>-step<N>.safetensors`` and ``save_last_n_steps`` keeps those of the last N steps.
Only files written by this session are removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lab.apps import compat_filename
from lab.training.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass
class SaveSchedule:
    """When to write an intermediate LoRA, and which older ones to remove."""

    config: TrainConfig
    epoch_files: list[Path] = field(default_factory=list)
    step_files: dict[int, Path] = field(default_factory=dict)

    def epoch_file(self, epoch: int) -> Path | None:
        """The file to write at the end of ``epoch``, or None when none is due."""
        every = self.config.save_every_n_epochs
        if not every or epoch % every:
            return None
        return self.config.output_dir / f"{self.config.output_name}-{epoch:06d}.safetensors"

    def step_file(self, step: int) -> Path | None:
        """The file to write after optimizer step ``step``, or None when none is due."""
        every = self.config.save_every_n_steps
        if not every or step % every or step in self.step_files:
            return None
        return self.config.output_dir / f"{self.config.output_name}-step{step:08d}.safetensors"

    def saved_epoch(self, path: Path) -> None:
        """Record an epoch file; remove the oldest beyond ``save_last_n_epochs``."""
        self.epoch_files.append(path)
        keep = self.config.save_last_n_epochs
        while keep is not None and len(self.epoch_files) > keep:
            old = self.epoch_files.pop(0)
            _remove(old)
            logger.info("removed %s (save_last_n_epochs=%d)", old, keep)

    def saved_step(self, step: int, path: Path) -> None:
        """Record a step file; remove those older than ``save_last_n_steps`` steps."""
        self.step_files[step] = path
        keep = self.config.save_last_n_steps
        for old in [s for s in self.step_files if keep and s < step - keep]:
            _remove(self.step_files.pop(old))
            logger.info("removed the step-%d LoRA (save_last_n_steps=%d)", old, keep)


def _remove(path: Path) -> None:
    """An old LoRA file, and the plain-LoRA fit saved beside a DoRA one."""
    path.unlink(missing_ok=True)
    path.with_name(compat_filename(path.name)).unlink(missing_ok=True)

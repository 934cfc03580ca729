"""The trainer's errors: one base class, translated only at the edges (CLI, worker task)."""

from __future__ import annotations

from lab.errors import LabError
from lab.training.errors import ConfigError

__all__ = [
    "CaptionerError",
    "ConfigError",
    "DatasetError",
    "ResumeError",
    "TrainerError",
    "UnsafeCheckpointError",
]


class TrainerError(LabError):
    """Anything the trainer refuses or cannot do, with a message meant for the user."""

    code = "trainer_error"


class DatasetError(TrainerError):
    """The dataset folder is empty, malformed or unreadable."""

    code = "trainer_dataset"


class UnsafeCheckpointError(TrainerError):
    """A pickle checkpoint (`.ckpt/.pt/.bin`) was given without explicit opt-in."""

    code = "trainer_unsafe_checkpoint"


class ResumeError(TrainerError):
    """The resume state directory is missing, incomplete or belongs to another setup."""

    code = "trainer_resume"


class CaptionerError(TrainerError):
    """The captioning model is missing, malformed, or cannot run here (here, not in
    `trainer.captioners`, so the model modules that package loads need not import it back)."""

    code = "captioner_error"

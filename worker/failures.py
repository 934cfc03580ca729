"""What a failed training attempt means: *permanent* (bad input, a config the trainer
refuses, the GPU out of memory, a full disk) fails the job at once with the reason;
*retryable* (a network or file-store blip, the database away longer than the writes'
retries) hands the job back to the queue with the reason recorded, so it resumes
from its newest state instead of waiting for its lease to expire.

The trainer's error types are imported inside `classify`: the worker's main process
never imports torch (this module is imported by the runner, in the pool child)."""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from lab.dataset.export import ExportError
from lab.dataset.reasons import DatasetError
from lab.storage import StorageError
from lab.training import ConfigError

log = logging.getLogger(__name__)

# A full disk does not empty itself by retrying on the same worker; the job fails
# with what to do (another worker would take the retry the trainer asks for).
_PERMANENT_ERRNOS = {
    errno.ENOSPC: "The worker's disk is full",
    errno.EDQUOT: "The worker's disk quota is used up",
}


class JobFailure(Exception):
    """A failure with a message for the trainer who started the job."""


@dataclass(frozen=True, slots=True)
class Failure:
    permanent: bool
    reason: str


def classify(exc: BaseException) -> Failure:
    """Permanent or retryable, with the reason to show in the ticket's thread."""
    import torch

    from trainer.errors import TrainerError

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return Failure(
            True,
            "The GPU ran out of memory. Lower train_batch_size or the resolution, "
            "turn on gradient_checkpointing, or use a smaller network_dim.",
        )
    if isinstance(exc, ExportError):
        return Failure(True, f"The dataset could not be prepared for training: {exc}")
    if isinstance(exc, (TrainerError, ConfigError, DatasetError, JobFailure)):
        return Failure(True, str(exc))
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        where = f" ({exc.filename})" if exc.filename else ""
        return Failure(
            True, f"{_PERMANENT_ERRNOS[exc.errno]}{where}. Free space on it, then /train retry."
        )
    if isinstance(exc, StorageError):
        return Failure(False, f"The file store failed: {exc}")
    if isinstance(exc, SQLAlchemyError):
        return Failure(False, f"The database was unreachable: {type(exc).__name__}")
    if isinstance(exc, OSError):
        return Failure(False, f"A file or network error on the worker: {exc}")
    # A bug or something unforeseen: retried (it may be this machine), and the reason
    # is kept so the last attempt's failure says what happened.
    log.error("unexpected error in a training job", exc_info=exc)
    return Failure(False, f"Unexpected error: {type(exc).__name__}: {exc}")

"""Import the trainer stack (torch, diffusers, peft) in a GPU worker's pool child while it
waits for work, so a job does not start with a minute of imports.

Only in the child, after the fork: the main process stays torch-free, and a fresh child
per task (`--max-tasks-per-child=1`) still starts with clean CUDA state, since importing
torch does not initialise CUDA. The import runs on a thread because Celery gives a child
only a few seconds to report itself up; a task that arrives meanwhile waits for it
(`wait`) instead of importing the same modules from a second thread.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)
_done = threading.Event()
_done.set()  # nothing under way until `start` says so


def _import_trainer() -> None:
    started = time.monotonic()
    try:
        import trainer.loop  # noqa: F401

        log.info("trainer stack preloaded in %.1fs", time.monotonic() - started)
    except Exception:  # the task's own import will raise it where it can be reported
        log.exception("preloading the trainer stack failed")
    finally:
        _done.set()


def start() -> None:
    """Begin importing the trainer stack in the background (idempotent per process)."""
    if not _done.is_set():
        return
    _done.clear()
    threading.Thread(target=_import_trainer, name="preload-trainer", daemon=True).start()


def wait() -> None:
    """Return once a preload started in this process has finished (at once if none)."""
    _done.wait()

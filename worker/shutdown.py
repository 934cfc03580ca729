"""SIGTERM while a job trains (`docker stop`, an upgrade, `loralab up` stopping): the
trainer saves its state at the next step and the job goes back to the queue at once,
instead of running on until the grace period's SIGKILL loses the work since the last
state, and then waiting for its lease to expire.

Celery's main process handles SIGTERM as a warm shutdown (it waits for running
tasks), and `docker stop` signals only that process; `forward_to_children` passes the
signal on to the pool children, where `while_training` turns it into a stop request.
Imports no module of ours."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)
_requested = threading.Event()


def requested() -> bool:
    """True once this process was asked to shut down while a job trained."""
    return _requested.is_set()


@contextmanager
def while_training() -> Iterator[None]:
    """Within this block SIGTERM asks the job to save and hand itself back instead of
    killing the process (billiard's own handler, restored after the block, exits)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # in-process callers on other threads: signals are the main thread's
        return
    _requested.clear()

    def on_term(signum: int, _frame: FrameType | None) -> None:
        log.warning("SIGTERM: saving the training state and handing the job back")
        _requested.set()

    previous: Any = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def forward_to_children() -> None:
    """Pass a shutdown on to this worker's pool children (Celery's warm shutdown would
    otherwise wait for a training task to run to its end)."""
    import billiard.process

    for child in billiard.process.active_children():
        if child.pid:
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue

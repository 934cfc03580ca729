"""The worker registry (for /train workers): name, queues, GPU, heartbeat, current job.

The GPU is described with `nvidia-smi`, never by initialising CUDA: the worker's main
process must stay torch-free so its forked children start clean.
"""

from __future__ import annotations

import functools
import logging
import shutil
import socket
import subprocess
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import SQLAlchemyError

from db.base import utcnow
from db.models import Worker
from worker.runtime import Runtime

log = logging.getLogger(__name__)


@functools.cache
def gpu_info() -> tuple[str | None, int | None]:
    """(name, memory in MiB) of the first GPU, or (None, None) on a CPU-only machine."""
    if shutil.which("nvidia-smi") is None:
        return None, None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed: %s", exc)
        return None, None
    if not out:
        return None, None
    name, _, memory = out[0].partition(",")
    return name.strip(), int(float(memory)) if memory.strip() else None


def gpu_description() -> str:
    name, memory = gpu_info()
    if name is None:
        return "CPU"
    return f"{name} ({memory // 1024} GiB)" if memory else name


def register(rt: Runtime, queues: list[str]) -> None:
    name, memory = gpu_info()
    with rt.factory.begin() as session:
        row = session.get(Worker, rt.name) or Worker(name=rt.name)
        row.hostname = socket.gethostname()
        row.queues, row.gpu_name, row.gpu_memory_mb = queues, name, memory
        row.started_at = row.heartbeat_at = utcnow()
        row.current_job_id = None
        session.add(row)


def heartbeat(rt: Runtime) -> bool:
    """Renew this worker's heartbeat; False when its row is gone."""
    with rt.factory.begin() as session:
        result = session.execute(
            update(Worker).where(Worker.name == rt.name).values(heartbeat_at=utcnow())
        )
        return bool(result.rowcount)


def set_current_job(rt: Runtime, job_id: int | None) -> None:
    """Record what this worker runs (best effort: the registry is informational)."""
    try:
        with rt.factory.begin() as session:
            session.execute(
                update(Worker)
                .where(Worker.name == rt.name)
                .values(current_job_id=job_id, heartbeat_at=utcnow())
            )
    except SQLAlchemyError as exc:  # never let the registry fail a job
        log.warning("could not update the worker registry: %s", exc)


def forget_gone(rt: Runtime, silent_for: float) -> list[str]:
    """Remove workers whose heartbeat is older than `silent_for` seconds (killed, the
    machine lost) from the registry, so /train workers stops listing them with a job.
    A worker that was only cut off registers again with its next heartbeat."""
    cutoff = utcnow() - timedelta(seconds=silent_for)
    with rt.factory.begin() as session:
        gone = session.scalars(
            delete(Worker)
            .where(Worker.heartbeat_at < cutoff, Worker.name != rt.name)
            .returning(Worker.name)
        ).all()
    if gone:
        log.warning("workers gone (no heartbeat for %.0fs): %s", silent_for, gone)
    return list(gone)


def unregister(rt: Runtime) -> None:
    with rt.factory.begin() as session:
        session.execute(delete(Worker).where(Worker.name == rt.name))

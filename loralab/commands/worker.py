"""`loralab worker`: a Celery worker on the cpu and/or gpu queue."""

from __future__ import annotations

import os
import socket

import click

from lab.settings import WorkerSettings
from lab.tasks import Queue, consumed_queues


@click.command()
@click.option(
    "--queue",
    "queues",
    multiple=True,
    type=click.Choice([q.value for q in Queue]),
    default=[Queue.CPU.value],
    show_default=True,
    help="Queue(s) to consume (repeatable).",
)
@click.option("--concurrency", default=1, show_default=True, help="Processes (GPUs) to run.")
@click.option("--name", default=None, help="Worker name (NAME@host in /train workers).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(queues: tuple[str, ...], concurrency: int, name: str | None, loglevel: str) -> None:
    """Run a worker. GPU workers run each training task in a fresh process."""
    from worker.app import configure

    # One name for the process and its pool children (registry, leases and Celery's
    # node name, so `celery inspect ping -d NAME@HOST` reaches this worker).
    name = f"{name or f'w{os.getpid()}'}@{socket.gethostname()}"
    settings = WorkerSettings(queues=tuple(queues), concurrency=concurrency, worker_name=name)
    app = configure(settings)
    consumed = consumed_queues(tuple(queues), [f.value for f in settings.base_models])
    argv = [
        "worker",
        f"--queues={','.join(consumed)}",
        f"--concurrency={concurrency}",
        f"--loglevel={loglevel}",
        f"--hostname={name}",
        "--without-gossip",
        "--without-mingle",
    ]
    if Queue.GPU.value in queues:
        # A fresh process per GPU task: CUDA memory and allocator state never leak
        # from one job into the next.
        argv.append("--max-tasks-per-child=1")
    app.worker_main(argv)

"""Run one training job on several GPUs: ``accelerate launch`` inside a task.

:func:`launch` starts one process per GPU, each ``python -m trainer.launch`` with the
environment ``accelerate launch``/``torchrun`` give their workers (``MASTER_ADDR``,
``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``), so accelerate sets up
the process group (NCCL on GPUs, gloo on CPUs) and every rank runs
:func:`trainer.loop.train`. The caller's process only relays: it sends each rank the
config over a pipe, passes rank 0's callbacks to the caller's callbacks and answers its
commands, in the caller's thread.

Why plain subprocesses rather than ``multiprocessing`` (accelerate's
``notebook_launcher``/``debug_launcher``, ``torch.multiprocessing.spawn``): a Celery
prefork pool child is a daemonic process, and ``multiprocessing`` refuses to start
children from one. Subprocesses are also independent of the caller's state (CUDA,
a process group, a pool), and the caller never joins a collective, so it can always
end every rank when one fails, instead of hanging in an all-reduce with a dead peer.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection, Pipe, wait
from typing import Any

from lab.training.config import TrainConfig
from trainer.callbacks import Callbacks, Commands, NeverStop, NullCallbacks
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)

PIPE_FD_ENV = "LORALAB_LAUNCH_FD"
_POLL_SECONDS = 0.5
_STOP_GRACE_SECONDS = 15


class LaunchError(TrainerError):
    """A training process ended without a result."""


def launch(
    config: TrainConfig,
    processes: int = 1,
    callbacks: Callbacks | None = None,
    commands: Commands | None = None,
) -> Any:
    """Train ``config`` on ``processes`` processes (one per GPU) and return rank 0's
    :class:`~trainer.loop.TrainResult`; one process trains here, in this process."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    callbacks, commands = callbacks or NullCallbacks(), commands or NeverStop()
    if processes == 1:
        from trainer.loop import train

        return train(config, callbacks, commands)
    return _Launch(config, processes, callbacks, commands).run()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Launch:
    def __init__(
        self, config: TrainConfig, processes: int, callbacks: Callbacks, commands: Commands
    ) -> None:
        self.config = config
        self.processes = processes
        self.callbacks = callbacks
        self.commands = commands
        self.ranks: list[subprocess.Popen[bytes]] = []
        self.pipes: dict[Connection, int] = {}
        self.result: Any = None
        self.errors: dict[int, BaseException] = {}

    def run(self) -> Any:
        try:
            self._start()
            self._relay()
        finally:
            self._end_all()
        if self.errors:
            raise self.errors[min(self.errors)]
        failed = [(r, p.returncode) for r, p in enumerate(self.ranks) if p.returncode]
        if failed:
            rank, code = failed[0]
            raise LaunchError(f"training process {rank} of {self.processes} exited with {code}")
        if self.result is None:
            raise LaunchError("training process 0 ended without a result")
        return self.result

    def _start(self) -> None:
        port = _free_port()
        for rank in range(self.processes):
            ours, theirs = Pipe()
            env = {
                **os.environ,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "WORLD_SIZE": str(self.processes),
                "LOCAL_WORLD_SIZE": str(self.processes),
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                PIPE_FD_ENV: str(theirs.fileno()),
            }
            process = subprocess.Popen(
                [sys.executable, "-m", "trainer.launch"], env=env, pass_fds=[theirs.fileno()]
            )
            theirs.close()
            ours.send(self.config)
            self.ranks.append(process)
            self.pipes[ours] = rank
        logger.info("started %d training processes (port %d)", self.processes, port)

    def _relay(self) -> None:
        while self.pipes:
            for pipe in wait(list(self.pipes), timeout=_POLL_SECONDS):
                self._receive(pipe)  # type: ignore[arg-type]
            dead = [r for r, p in enumerate(self.ranks) if p.poll() not in (None, 0)]
            if dead:
                for pipe in [p for p in self.pipes if p.poll()]:
                    self._receive(pipe)  # its last words: the error it sent
                logger.error("training process %d failed; ending the others", dead[0])
                return

    def _receive(self, pipe: Connection) -> None:
        rank = self.pipes[pipe]
        try:
            kind, *payload = pipe.recv()
        except (EOFError, OSError):
            del self.pipes[pipe]
            return
        except Exception as error:  # an exception that does not unpickle here
            self.errors[rank] = LaunchError(f"training process {rank}: {error}")
            return
        if kind == "call":
            method, args = payload
            getattr(self.callbacks, method)(*args)
        elif kind == "ask":
            ask = getattr(self.commands, payload[0], None)
            pipe.send(bool(ask is not None and ask()))
        elif kind == "result":
            if rank == 0:
                self.result = payload[0]
        elif kind == "error":
            self.errors[rank] = payload[0]

    def _end_all(self) -> None:
        for process in self.ranks:
            if process.poll() is None and (self.errors or self.result is None):
                process.terminate()
        for rank, process in enumerate(self.ranks):
            try:
                process.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("training process %d did not stop; killing it", rank)
                process.kill()
                process.wait()
        for pipe in self.pipes:
            pipe.close()


class _RelayCallbacks:
    """A rank's callbacks: each call goes to the launching process."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe

    def __getattr__(self, method: str) -> Any:
        if not method.startswith("on_"):
            raise AttributeError(method)
        return lambda *args: self._pipe.send(("call", method, args))


class _RelayCommands:
    """A rank's commands: each question is answered by the launching process."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe

    def should_stop(self) -> bool:
        return self._ask("should_stop")

    def should_save_state(self) -> bool:
        return self._ask("should_save_state")

    def _ask(self, method: str) -> bool:
        self._pipe.send(("ask", method))
        return bool(self._pipe.recv())


def main() -> int:
    """One rank: read the config from the launcher's pipe, train, send the result."""
    import torch.distributed

    from trainer.loop import train

    rank = os.environ.get("RANK", "?")
    logging.basicConfig(
        level=logging.INFO, format=f"rank {rank} %(levelname)s %(name)s: %(message)s"
    )
    pipe = Connection(int(os.environ[PIPE_FD_ENV]))
    config = pipe.recv()
    try:
        # Every rank relays its callbacks; the loop passes them on from rank 0 only.
        result = train(config, _RelayCallbacks(pipe), _RelayCommands(pipe))  # type: ignore[arg-type]
    except BaseException as error:
        logger.exception("training failed")
        try:
            pipe.send(("error", error))
        except Exception:  # not picklable: send its text
            pipe.send(("error", LaunchError(f"training process {rank}: {error!r}")))
        return 1
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    pipe.send(("result", result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

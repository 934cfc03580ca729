"""The embedded lab the demo runs: its folders and settings, the tiny base model, the
real Celery worker process, and the bot built as `loralab bot` builds it (with a task
sender on the same filesystem broker) for simcord's simulated Discord."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lab.families import BaseFamily
from lab.settings import BotSettings, StorageSettings, WorkerSettings

log = logging.getLogger(__name__)

SIMCORD_HOSTS = frozenset({"cdn.simcord.invalid"})
"""simcord serves attachments from here; the bot fetches uploads only from these hosts."""

TINY_TRAINING = (
    "resolution=64,64 min_bucket_reso=32 max_bucket_reso=128 bucket_reso_steps=32 "
    "network_dim=4 network_alpha=2 train_batch_size=2 max_train_epochs=2 num_repeats=1 "
    "learning_rate=0.001 mixed_precision=no save_precision=float "
    "gradient_checkpointing=false cache_latents_to_disk=false seed=7"
)
"""`/train config` overrides for the tiny model: 64 px, rank 4, fp32, two epochs."""

REAL_TRAINING = "network_dim=16 network_alpha=8 max_train_epochs=2 num_repeats=2"
"""`/train config` overrides when a real base model is given (`--base-model`)."""

CPU_TRAINING = "mixed_precision=no save_precision=float"
"""Added to `REAL_TRAINING` where the worker has no CUDA GPU."""


@dataclass(frozen=True, slots=True)
class DemoPaths:
    """Where the demo keeps its lab and writes what it produced."""

    root: Path

    @property
    def home(self) -> Path:
        """The lab's data dir (``LORALAB_HOME``): SQLite, broker folders, storage."""
        return self.root / "data"

    @property
    def base(self) -> Path:
        """The tiny base model (`trainer.tiny.build_tiny_sd15` writes this folder)."""
        return self.root / "base" / "tiny-sd15"

    @property
    def released(self) -> Path:
        return self.root / "released"

    @property
    def grids(self) -> Path:
        return self.root / "grids"

    @property
    def loss_curve(self) -> Path:
        return self.root / "loss-curve.png"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def json_report(self) -> Path:
        return self.root / "report.json"

    @property
    def transcript(self) -> Path:
        return self.root / "transcript.txt"

    @property
    def worker_log(self) -> Path:
        return self.root / "worker.log"

    def fresh(self) -> None:
        """Start from an empty lab (the tiny base model is kept: it never changes)."""
        for path in (self.home, self.released, self.grids, self.report):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.loss_curve, self.transcript, self.worker_log, self.json_report):
            path.unlink(missing_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)


def ensure_tiny_base(paths: DemoPaths) -> Path:
    """The tiny random-init SD1.5 model (built in code the first time, then reused)."""
    marker = paths.base / "model_index.json"
    if not marker.exists():
        from trainer.tiny import build_tiny_sd15

        shutil.rmtree(paths.base, ignore_errors=True)
        paths.base.parent.mkdir(parents=True, exist_ok=True)
        built = build_tiny_sd15(paths.base.parent)
        if built.resolve() != paths.base.resolve():
            raise RuntimeError(f"the tiny model was written to {built}, not {paths.base}")
    return paths.base


def worker_settings(paths: DemoPaths, base_model: Path, *, tiny: bool) -> WorkerSettings:
    """Embedded settings for the demo's worker: quick leases and progress, few sampler
    steps on the tiny model."""
    return WorkerSettings(
        home=paths.home.resolve(),
        database_url=f"sqlite:///{(paths.home / 'lab.db').resolve()}",
        broker_url="filesystem://",
        storage=StorageSettings(),
        base_models={BaseFamily.SD15: str(base_model.resolve())},
        lease_seconds=30,
        reaper_interval_seconds=1,
        progress_interval_seconds=0.5,
        sample_steps=4 if tiny else 20,
        max_attempts=2,
    )


def bot_settings(worker: WorkerSettings) -> BotSettings:
    """The bot's settings on the same database, broker and storage as the worker."""
    return BotSettings(
        home=worker.home,
        database_url=worker.resolved_database_url,
        broker_url=worker.resolved_broker_url,
        storage=StorageSettings(),
        discord_token=None,
    )


def worker_env(settings: WorkerSettings) -> dict[str, str]:
    """The environment that gives the worker process exactly `settings` (any
    ``LORALAB_…`` or database variable of the caller's shell is left out)."""
    ignored = {"DATABASE_URL", "BROKER_URL", "DISCORD_TOKEN"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALAB_") and k not in ignored}
    env.update(settings.as_environment(), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


class WorkerProcess:
    """``loralab worker --queue gpu --queue cpu``, a real process of its own."""

    def __init__(self, settings: WorkerSettings, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._out = log_path.open("wb")
        command = [sys.executable, "-m", "loralab.cli", "worker", "--queue", "gpu"]
        command += ["--queue", "cpu", "--name", name, "--loglevel", "INFO"]
        self.proc = subprocess.Popen(
            command,
            env=worker_env(settings),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.info("worker %s started (pid %d), log in %s", name, self.proc.pid, log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (Celery's warm shutdown), then SIGKILL after 20 s."""
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._out.close()

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def virtual_clock(elapsed: Callable[[], float]) -> Callable[[], datetime]:
    """Real now plus simcord's virtual elapsed time: rows the worker writes (real time)
    are due at once, and advancing the simulated clock moves the bot's clock too."""

    def now() -> datetime:
        return datetime.now(UTC) + timedelta(seconds=elapsed())

    return now


def make_bot(settings: BotSettings, worker: WorkerSettings, elapsed: Callable[[], float]) -> Any:
    """The bot as `loralab bot` builds it, with a Celery client on the demo's broker.
    Returns ``(bot, engine)``; the caller disposes of the engine."""
    from bot.app import create_bot
    from db.session import make_engine, make_session_factory
    from lab.storage import storage_from_settings
    from worker.client import CelerySender, client_app

    celery = client_app(worker, "loralab-demo-bot")
    engine = make_engine(settings.resolved_database_url)
    bot = create_bot(
        settings.model_copy(update={"attachment_hosts": SIMCORD_HOSTS}),
        session_factory=make_session_factory(engine),
        task_sender=CelerySender(celery),
        storage=storage_from_settings(settings),
        clock=virtual_clock(elapsed),
        progress_interval=4.0,
    )
    return bot, engine

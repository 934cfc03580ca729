"""`loralab up`: the bot and its worker(s) on one machine, on the embedded defaults
(SQLite, Celery's filesystem broker, local storage under ``LORALAB_HOME``), for a small
community with one GPU box. It needs a real ``DISCORD_TOKEN``.

`up` migrates the database, then starts ``loralab bot`` and one ``loralab worker`` per
GPU as child processes and watches them: when one exits, the others are stopped and
`up` exits with its status (a supervisor such as systemd then restarts the set).
Ctrl-C or SIGTERM stops all of them (workers finish or re-queue their job: leases).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from lab.families import BaseFamily

log = logging.getLogger(__name__)


# The worker never holds the Discord token (docs/architecture.md): a worker runs
# trainer code on member-chosen configs, and its environment must have nothing to leak.
BOT_ONLY_VARIABLES = frozenset({"DISCORD_TOKEN", "LORALAB_DISCORD_TOKEN"})


@dataclass(frozen=True)
class Child:
    """One process `up` runs: a name for messages, its command, extra environment, and
    the variables of `up`'s own environment it must not inherit."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    unset: frozenset[str] = frozenset()

    def environment(self, parent: Mapping[str, str]) -> dict[str, str]:
        """``parent`` without :attr:`unset`, plus :attr:`env`."""
        return {k: v for k, v in parent.items() if k not in self.unset} | self.env


def plan(
    *, home: Path, gpus: int, base_models: Mapping[str, str], python: str = sys.executable
) -> list[Child]:
    """The processes of one lab: the bot, and one worker per GPU (the first one also
    takes the cpu queue). Every child gets the same absolute ``LORALAB_HOME``."""
    common = {"LORALAB_HOME": str(home.resolve())}
    for family, path in base_models.items():
        common[f"LORALAB_BASE_MODELS__{family.upper()}"] = path
    cli = [python, "-m", "loralab.cli"]
    children = [Child("bot", [*cli, "bot"], dict(common))]
    for index in range(gpus):
        queues = ["--queue", "gpu"] + (["--queue", "cpu"] if index == 0 else [])
        env = dict(common)
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(index)
        argv = [*cli, "worker", *queues, "--name", f"gpu{index}"]
        children.append(Child(f"worker-{index}", argv, env, unset=BOT_ONLY_VARIABLES))
    return children


def supervise(children: Sequence[Child], *, poll: float = 0.5, grace: float = 30.0) -> int:
    """Run `children` until one exits or this process is asked to stop; then stop the
    rest (SIGTERM, SIGKILL after `grace` seconds). Returns the exit status to use."""
    running: list[tuple[Child, subprocess.Popen[bytes]]] = []
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for child in children:
            proc = subprocess.Popen(child.argv, env=child.environment(os.environ))
            running.append((child, proc))
            shown = " ".join(["loralab", *child.argv[3:]])  # argv: python -m loralab.cli …
            click.echo(f"started {child.name} (pid {proc.pid}): {shown}")
        while not stop["signal"]:
            ended = [(c, p) for c, p in running if p.poll() is not None]
            if ended:
                child, proc = ended[0]
                status = proc.returncode or 1
                click.echo(f"{child.name} exited with status {proc.returncode}; stopping the rest")
                break
            time.sleep(poll)
        else:
            click.echo("stopping")
    finally:
        _stop_all([p for _, p in running], grace)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def _stop_all(procs: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _parse_base_models(values: Sequence[str]) -> dict[str, str]:
    models: dict[str, str] = {}
    for value in values:
        family, sep, path = value.partition("=")
        if not sep or family not in {f.value for f in BaseFamily}:
            families = ", ".join(f.value for f in BaseFamily)
            raise click.BadParameter(f"{value!r}: write FAMILY=PATH with FAMILY one of {families}")
        if not Path(path).exists():
            raise click.BadParameter(f"{path}: no such file or folder")
        models[family] = str(Path(path).resolve())
    return models


@click.command()
@click.option("--gpus", default=1, show_default=True, help="GPU workers to run (one per GPU).")
@click.option(
    "--base-model",
    "base_models",
    multiple=True,
    metavar="FAMILY=PATH",
    help="Base model per family, e.g. sd15=/models/sd15 (else LORALAB_BASE_MODELS__SD15).",
)
def up(gpus: int, base_models: tuple[str, ...]) -> None:
    """Run the bot and GPU worker(s) on this machine (needs DISCORD_TOKEN)."""
    from lab.settings import BotSettings, WorkerSettings

    settings = BotSettings()
    if settings.discord_token is None:
        raise click.UsageError(
            "DISCORD_TOKEN is not set. `loralab up` runs the real bot: create the bot in "
            "Discord's developer portal, put its token in DISCORD_TOKEN (or .env), and see "
            "docs/quickstart.md. To try the lab without Discord, run `loralab demo`."
        )
    if gpus < 1:
        raise click.BadParameter("at least one worker", param_hint="--gpus")
    models = _parse_base_models(base_models)
    configured = {f.value for f in WorkerSettings().base_models} | set(models)
    if not configured:
        click.echo(
            "warning: no base model configured; training will fail until you pass "
            "--base-model sd15=PATH (or set LORALAB_BASE_MODELS__SD15).",
            err=True,
        )
    from db import migrate

    settings.home.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    migrate.upgrade(url)
    mode = "embedded (SQLite, filesystem broker)" if settings.is_embedded else "external broker"
    click.echo(f"lab data in {settings.home.resolve()} · {mode} · database at head")
    children = plan(home=settings.home, gpus=gpus, base_models=models)
    sys.exit(supervise(children))

"""`run_demo`: prepare the embedded lab, start the worker, play the story in simcord's
simulated guild, write what it produced. With ``interactive``, simcord's browser preview
of the ticket's post opens as soon as the bot makes it: the story plays in the page,
which stays open afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from loralab.demo.lab import (
    CPU_TRAINING,
    REAL_TRAINING,
    TINY_TRAINING,
    DemoPaths,
    WorkerProcess,
    bot_settings,
    ensure_tiny_base,
    make_bot,
    worker_settings,
)
from loralab.demo.report import HtmlReport, Produced, export_artifacts, json_report, write_json
from loralab.demo.story import Outcome, play
from loralab.demo.transcript import Transcript
from loralab.demo.world import DemoError, Member, World

log = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    """What `loralab demo` was asked to do."""

    root: Path = Path(".loralab/demo")
    base_model: Path | None = None
    json_report: Path | None = None
    interactive: bool = False
    port: int | None = None
    interactive_seconds: float | None = None
    """Close the interactive preview after this long (``None``: until Ctrl-C)."""
    training_timeout: float = 900
    echo: Callable[[str], None] = click.echo
    on_preview: Callable[[str], Awaitable[None] | None] | None = None
    """Called with the preview's URL once it serves, before the story goes on (tests use
    it; an awaitable it returns is awaited first)."""


@dataclass
class _Run:
    options: DemoOptions
    paths: DemoPaths
    transcript: Transcript
    produced: Produced = field(default_factory=Produced)
    outcome: Outcome | None = None
    world: World | None = None
    bot_errors: list[str] = field(default_factory=list)
    error: str | None = None
    report: dict[str, Any] | None = None


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run the whole demo; returns the JSON report (also written when asked). Raises
    `DemoError` when the story could not finish (the report says why)."""
    paths = DemoPaths(options.root)
    paths.fresh()
    with paths.transcript.open("w", encoding="utf-8") as copy:
        run = _Run(options, paths, Transcript(options.echo, copy))
        try:
            _run(run)
        except DemoError as exc:
            run.error = str(exc)
            run.transcript.line(f"The demo stopped: {exc}", style={"fg": "red", "bold": True})
        if run.report is None:  # the story stopped before its end: report what there is
            _finish(run)
    if run.error is not None:
        raise DemoError(run.error)
    assert run.report is not None
    return run.report


def _finish(run: _Run) -> None:
    """Write the JSON report and, when the story ended well, print where things are."""
    report = json_report(
        run.outcome,
        run.world,
        run.transcript,
        run.produced,
        error=run.error,
        base_model=str(run.options.base_model or run.paths.base),
    )
    report["bot_errors"] = run.bot_errors
    run.report = report
    write_json(run.paths.json_report, report)
    if run.options.json_report is not None:
        write_json(run.options.json_report, report)
    if run.error is None:
        _summary(run, report)


def _run(run: _Run) -> None:
    from db import migrate

    t, paths, options = run.transcript, run.paths, run.options
    t.line("LoRA Lab demo: a simulated Discord server, the real bot, a real Celery worker.")
    with t.section("0. The lab"):
        tiny = options.base_model is None
        base = (options.base_model or paths.base).resolve()
        settings = worker_settings(paths, base, tiny=tiny)
        migrate.upgrade(settings.resolved_database_url)
        t.note(f"embedded lab in {paths.home} (SQLite, filesystem broker, local storage)")
        worker = WorkerProcess(settings, "demo-gpu", paths.worker_log)
        t.note(f"worker `loralab worker --queue gpu --queue cpu` started (pid {worker.pid})")
    executor = ThreadPoolExecutor(max_workers=1)
    # The tiny model is built while the story's first phases run.
    built: Future[Path] = executor.submit(ensure_tiny_base, paths) if tiny else _done(base)
    try:
        overrides = TINY_TRAINING if tiny else REAL_TRAINING
        if not tiny and not _cuda_available():
            # The presets train in fp16, which a CPU runs very slowly (if at all).
            overrides += " " + CPU_TRAINING
            run.transcript.note("no CUDA GPU here: the real model trains in fp32 on the CPU (slow)")
        asyncio.run(_simulate(run, settings, worker, built, overrides))
    finally:
        executor.shutdown(wait=True)
        worker.stop()


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _done(value: Path) -> Future[Path]:
    future: Future[Path] = Future()
    future.set_result(value)
    return future


async def _simulate(
    run: _Run, settings: Any, worker: WorkerProcess, built: Future[Path], overrides: str
) -> None:
    import simcord

    from bot.errors import describe
    from lab.storage import storage_from_settings

    box: list[Any] = []
    bot, engine = make_bot(
        bot_settings(settings), settings, lambda: box[0].backend.clock.elapsed if box else 0.0
    )
    try:
        async with (
            simcord.run(bot, check_errors=False) as env,
            contextlib.AsyncExitStack() as pages,
        ):
            box.append(env)
            await bot.user.edit(username="LoRA Lab")  # simcord names its bot user TestBot
            owner = env.create_user("owner")
            guild = env.create_guild("LoRA Lab", owner=owner)
            general = guild.create_text_channel("general")
            world = World(env, bot, guild, bot.db.factory, run.transcript, worker, general=general)
            world.members["owner"] = Member(guild.add_member(owner), "Lab Admin")
            run.world = world

            async def open_page(thread: Any) -> None:
                # The page opens on the ticket's post as soon as it exists, so the rest
                # of the story (dataset to release, training included) plays in it.
                preview = await pages.enter_async_context(
                    env.preview(
                        thread,
                        viewers=[m.actor for m in world.members.values()],
                        layout="channel",
                        port=run.options.port,
                    )
                )
                await _announce(run, preview.url)

            run.outcome = await play(
                world,
                overrides,
                training_timeout=run.options.training_timeout,
                base_ready=lambda: asyncio.wrap_future(built),
                on_post=open_page if run.options.interactive else None,
            )
            storage = storage_from_settings(settings)
            export_artifacts(world, storage, run.outcome, run.paths, run.produced)
            run.produced.report = HtmlReport(world, run.paths.report).write(run.transcript)
            # The tree's on_error (LabTree) shows simcord every error, the refusals a
            # member is meant to read included; only the handler's "bug" kind counts.
            run.bot_errors = [repr(e) for e in env.errors if not describe(e)[1]]
            _finish(run)
            if run.options.interactive:
                run.transcript.line(
                    "The story is over; the page stays open (Ctrl-C ends the demo).",
                    style={"fg": "green", "bold": True},
                )
                await keep_ticking(
                    env, tick=bot.relay_interval, seconds=run.options.interactive_seconds
                )
    finally:
        engine.dispose()


async def _announce(run: _Run, url: str) -> None:
    t = run.transcript
    t.line()
    t.line(f"Interactive: open {url}", style={"fg": "green", "bold": True})
    t.line(
        "(the address is a secret for this session; the story plays in the page, which "
        "stays open after it; act in it once the story is over; Ctrl-C ends the demo)"
    )
    t.line()
    if run.options.on_preview is not None:
        answer = run.options.on_preview(url)
        if inspect.isawaitable(answer):
            await answer


async def serve_preview(
    env: Any,
    channel: Any,
    viewers: list[Any],
    *,
    tick: float,
    on_url: Callable[[str], Awaitable[None]],
    port: int | None = None,
    seconds: float | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """simcord's browser preview of `channel` on 127.0.0.1 (the first viewer is who the
    page acts as; the page can switch to the others), kept open by `keep_ticking`."""
    async with env.preview(channel, viewers=viewers, layout="channel", port=port) as preview:
        await on_url(preview.url)
        await keep_ticking(env, tick=tick, seconds=seconds, stop=stop)


async def keep_ticking(
    env: Any, *, tick: float, seconds: float | None = None, stop: asyncio.Event | None = None
) -> None:
    """The simulated clock advances by `tick` every second, so the bot's relay keeps
    delivering while people click. Runs until `stop` is set, `seconds` have passed, or
    the task is cancelled (Ctrl-C)."""
    import simcord

    deadline = None if seconds is None else time.monotonic() + seconds
    while deadline is None or time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            break
        await asyncio.sleep(1.0)
        try:
            await env.advance_time(tick)
        except simcord.SetupError as exc:  # a browser action is running: next tick
            log.debug("clock not advanced: %s", exc)


def _summary(run: _Run, report: dict[str, Any]) -> None:
    t, produced = run.transcript, run.produced
    ticket = report["ticket"] or {}
    t.line()
    t.line(
        f"Done in {report['total_seconds']:.1f}s: ticket #{ticket.get('number')} "
        f"“{ticket.get('name')}” is {ticket.get('status')} (epoch {ticket.get('chosen_epoch')}).",
        style={"fg": "green", "bold": True},
    )
    rows = [
        ("released LoRA", produced.released),
        ("sample grids", produced.grids[0].parent if produced.grids else None),
        ("loss curve", produced.loss_curve),
        ("HTML report", produced.report),
        ("transcript", run.paths.transcript),
        ("worker log", run.paths.worker_log),
        ("JSON report", run.options.json_report or run.paths.json_report),
    ]
    for label, path in rows:
        if path is not None:
            t.line(f"  {label:<14} {path}")
    for phase in report["phases"]:
        t.line(f"  {phase['name']:<16} {phase['seconds']:6.1f}s")

"""`loralab demo`: the whole lab offline on one machine (simulated Discord guild, the
real bot, a real Celery worker, a tiny base model unless one is given)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType

import click


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill <pid>``), handled like Ctrl-C so the worker and bot are stopped."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@click.command()
@click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".loralab/demo"),
    show_default=True,
    help="Where the demo keeps its lab and writes what it produced (emptied first).",
)
@click.option(
    "--base-model",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="An SD1.5 base model (diffusers folder or .safetensors) instead of the tiny one.",
)
@click.option(
    "--json-report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a machine-readable summary here (ticket state, artifacts, timings).",
)
@click.option(
    "--interactive",
    is_flag=True,
    help="Show the ticket's post in a local browser page as soon as it exists (the story "
    "plays in it) and keep the page open afterwards.",
)
@click.option("--port", type=int, default=None, help="Port of the interactive page.")
@click.option(
    "--training-timeout",
    type=float,
    default=900,
    show_default=True,
    help="Seconds to wait for the training job before giving up.",
)
def demo(
    root: Path,
    base_model: Path | None,
    json_report: Path | None,
    interactive: bool,
    port: int | None,
    training_timeout: float,
) -> None:
    """Play a whole ticket, request to release, on a simulated Discord server."""
    from loralab.demo.runner import DemoOptions, run_demo
    from loralab.demo.world import DemoError

    verbose = click.get_current_context().find_root().params.get("verbose", False)
    if not verbose:
        # The transcript is the output; the libraries' chatter would bury it.
        logging.getLogger().setLevel(logging.WARNING)
        for noisy in ("discord", "kombu"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
            os.environ.setdefault(name, "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    options = DemoOptions(
        root=root,
        base_model=base_model,
        json_report=json_report,
        interactive=interactive,
        port=port,
        training_timeout=training_timeout,
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        run_demo(options)
    except DemoError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "see above"
        raise click.ClickException(f"the demo did not finish: {first}") from None
    except Terminated:
        click.echo("demo stopped (SIGTERM)")
        raise SystemExit(143) from None
    except KeyboardInterrupt:
        click.echo("demo stopped")
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)

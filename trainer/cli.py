"""The ``train`` command, shared by ``loralab train`` and ``python -m trainer``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from lab.errors import LabError

logger = logging.getLogger(__name__)


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--preset", help="Defaults to start from, e.g. sd15-character (the file wins).")
@click.option(
    "--resume",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Continue from a training state directory.",
)
@click.option(
    "--allow-unsafe-checkpoint",
    is_flag=True,
    help="Allow pickle (.ckpt/.pt/.bin) base checkpoints, which can run code when loaded.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(
    config_file: Path,
    overrides: tuple[str, ...],
    preset: str | None,
    resume: Path | None,
    allow_unsafe_checkpoint: bool,
    quiet: bool,
) -> None:
    """Train a LoRA from a kohya-style TOML config.

    OVERRIDES are key=value pairs that replace config keys, e.g. network_dim=16
    learning_rate=5e-5 output_name=mylora.
    """
    # Imported here so that `loralab --help` never imports torch; the config is checked
    # before torch is imported (a typo is reported in a fraction of a second).
    from lab.training.config import build_config_with_sources, parse_override, read_config_file
    from lab.training.kohya import source_lines

    try:
        values = dict(parse_override(item) for item in overrides)
        if resume is not None:
            values["resume"] = str(resume)
        if allow_unsafe_checkpoint:
            values["allow_unsafe_checkpoint"] = True
        config, sources = build_config_with_sources(
            read_config_file(config_file),
            preset=preset,
            overrides=values,
            base_dir=config_file.parent,
        )
    except LabError as error:
        raise click.ClickException(str(error)) from error
    for line in source_lines(config.model_dump(), sources):
        click.echo(line, err=True)

    from trainer.callbacks import ConsoleCallbacks
    from trainer.loop import train as run_training

    try:
        result = run_training(config, ConsoleCallbacks(sys.stderr, disable=quiet))
    except LabError as error:
        raise click.ClickException(str(error)) from error
    if result.stopped:
        click.echo(f"stopped at step {result.global_step}; resume with --resume {result.state_dir}")
        return
    click.echo(
        f"done: {result.global_step} steps, {result.epoch} epochs, "
        f"{result.steps_per_second:.2f} steps/s ({result.images_per_second:.2f} images/s); "
        f"latents encoded {result.latents_encoded}, reused {result.latents_reused}"
    )
    click.echo(f"LoRA: {result.final_path}")

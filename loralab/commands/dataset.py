"""``loralab dataset …``: import uploads safely, check a dataset's health, export it.

Exit status: 0 when the command ran (even if files were rejected — they are listed),
1 for I/O errors, 2 for usage errors. ``--json`` prints exactly one JSON object on
stdout; progress bars go to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from lab.dataset.reasons import DatasetError
from lab.dataset.settings import IngestSettings
from lab.families import FAMILIES, BaseFamily
from loralab.commands.caption import caption

FAMILY_CHOICE = click.Choice([f.value for f in BaseFamily])


def _settings(workers: int | None = None) -> IngestSettings:
    from lab.settings import CliSettings

    settings = CliSettings().ingest
    return settings.model_copy(update={"workers": workers}) if workers else settings


def _emit(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(payload, indent=2))  # ASCII escapes: safe on any terminal


@click.group()
def dataset() -> None:
    """Curate LoRA datasets: import untrusted uploads, check health, export for kohya."""


@dataset.command("import")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--family", type=FAMILY_CHOICE, default=None, help="Apply its minimum size.")
@click.option("--trigger", default=None, help="Trigger word expected first in captions.")
@click.option("--class-token", default=None, help="Class token expected second.")
@click.option("--enforce-trigger", is_flag=True, help="Rewrite captions to start with them.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Decode threads.")
def import_(
    src: Path,
    dest: Path,
    as_json: bool,
    family: str | None,
    trigger: str | None,
    class_token: str | None,
    enforce_trigger: bool,
    workers: int | None,
) -> None:
    """Import SRC (a folder or a .zip) into DEST, normalised and stored by content hash."""
    from lab.dataset.ingest import CaptionPolicy, FolderStore, ingest
    from lab.dataset.sources import SourceFile, from_path

    if enforce_trigger and not trigger:
        raise click.UsageError("--enforce-trigger needs --trigger")
    settings = _settings(workers)
    store = FolderStore(dest)
    try:
        items = list(from_path(src, settings))
        dest.mkdir(parents=True, exist_ok=True)
        total = sum(1 for i in items if isinstance(i, SourceFile) and not i.is_caption)
        with tqdm(total=total, desc="import", unit="img", file=sys.stderr, disable=None) as bar:
            result = ingest(
                items,
                store,
                settings,
                family=BaseFamily(family) if family else None,
                captions=CaptionPolicy(trigger, class_token, enforce_trigger),
                known=store.known(),
                progress=bar.update,
            )
    except (OSError, DatasetError) as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        _emit(result.as_dict())
        return
    summary = result.summary()
    click.echo(
        f"{summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"{summary['near_duplicate_pairs']} near-duplicate pair(s) -> {dest}"
    )
    for rejection in result.rejected:
        click.echo(f"  rejected [{rejection.code}] {rejection.message}")
    for notice in result.warnings:
        click.echo(f"  warning [{notice.code}] {notice.message}")
    for a, b, distance in result.near_duplicates:
        click.echo(f"  similar: {a} ~ {b} (distance {distance})")


@dataset.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--resolution", type=click.IntRange(min=64), default=None, help="Training side.")
@click.option("--family", type=FAMILY_CHOICE, default=BaseFamily.SD15.value, show_default=True)
@click.option("--trigger", default=None, help="Trigger word (default: from a N_name folder).")
@click.option("--class-token", default=None)
@click.option("--no-upscale", is_flag=True, help="kohya's bucket_no_upscale.")
def check(
    directory: Path,
    as_json: bool,
    resolution: int | None,
    family: str,
    trigger: str | None,
    class_token: str | None,
    no_upscale: bool,
) -> None:
    """Report DIRECTORY's health: sizes, buckets, duplicates, captions, warnings."""
    from lab.buckets import BucketSpec
    from lab.dataset.report import build_report

    if not directory.is_dir():
        raise click.BadParameter(f"{directory} is not a folder", param_hint="DIR")
    base = BaseFamily(family)
    res = resolution or FAMILIES[base].resolution
    try:
        spec = BucketSpec.square(
            res, max_bucket_reso=max(1024, 2 * res), bucket_no_upscale=no_upscale
        )
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--resolution") from error
    try:
        with tqdm(desc="check", unit="img", file=sys.stderr, disable=None) as bar:
            report = build_report(
                directory,
                family=base,
                spec=spec,
                trigger=trigger,
                class_token=class_token,
                settings=_settings(),
                progress=bar.update,
            )
    except OSError as error:
        raise click.ClickException(str(error)) from error
    payload = report.as_dict()
    if as_json:
        _emit(payload)
        return
    counts = payload["counts"]
    click.echo(
        f"{directory}: {counts['images']} images ({counts['captioned']} captioned), "
        f"{base.value} at {res}px"
    )
    click.echo("buckets: " + ", ".join(f"{k} x{v}" for k, v in payload["buckets"].items()))
    files = report.warning_files(_settings())
    for warning in payload["warnings"]:
        click.echo(f"  warning [{warning['code']}] {warning['message']}")
        _list_files(files.get(warning["code"], []))


def _list_files(files: list[str], limit: int = 10) -> None:
    """The files behind a warning, the first ``limit`` of them."""
    for name in files[:limit]:
        click.echo(f"      {name}")
    if len(files) > limit:
        click.echo(f"      … and {len(files) - limit} more (--json lists every file)")


@dataset.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--trigger", required=True)
@click.option("--class-token", default=None)
@click.option("--repeats", type=click.IntRange(min=1), default=None)
@click.option("--target-steps", type=click.IntRange(min=1), default=None)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--keep-captions", is_flag=True, help="Do not rewrite trigger/class first.")
def export(
    directory: Path,
    out: Path,
    trigger: str,
    class_token: str | None,
    repeats: int | None,
    target_steps: int | None,
    epochs: int,
    batch_size: int,
    keep_captions: bool,
) -> None:
    """Write DIRECTORY as OUT/N_<trigger> <class>/ for the trainer (kohya layout)."""
    from lab.dataset.export import ExportError, export_kohya

    if (repeats is None) == (target_steps is None):
        raise click.UsageError("give exactly one of --repeats and --target-steps")
    try:
        result = export_kohya(
            directory,
            out,
            trigger,
            class_token,
            repeats=repeats,
            target_steps=target_steps,
            epochs=epochs,
            batch_size=batch_size,
            enforce=not keep_captions,
        )
    except (ExportError, OSError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"{result.images} images -> {result.folder} (repeats {result.repeats}, "
        f"{result.steps_per_epoch} steps per epoch at batch 1)"
    )


dataset.add_command(caption)

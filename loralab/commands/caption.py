"""``loralab dataset caption DIR --model PATH``: a first-pass caption for every image of a
local dataset with a WD14-style tagger or an image-to-text captioner, written beside
each image as ``<stem>.txt`` after the lab's rules (trigger first, class token second,
blacklist, max tags, implications, underscores per base style).

Models load from local paths; a hub id is used only with ``--allow-download``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from lab.autocaption import (
    CaptionerConfig,
    CaptionerKind,
    CaptionRules,
    parse_implications,
    style_for_base,
)


@click.command("caption")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", required=True, help="Tagger .onnx file or folder; captioner folder.")
@click.option(
    "--kind",
    type=click.Choice([k.value for k in CaptionerKind]),
    default=None,
    help="Default: tagger for .onnx files/folders, else captioner.",
)
@click.option("--trigger", default=None, help="Trigger word, written first.")
@click.option("--class-token", default=None, help="Class token, written second.")
@click.option(
    "--base",
    default="sd15",
    show_default=True,
    help="Named base (sd15, sdxl, pony, illustrious, noobai): its tag spelling.",
)
@click.option("--keep-underscores", is_flag=True, help="Write long_hair, not long hair.")
@click.option("--general-threshold", type=click.FloatRange(0, 1), default=0.35, show_default=True)
@click.option("--character-threshold", type=click.FloatRange(0, 1), default=0.85, show_default=True)
@click.option("--include-rating", is_flag=True, help="Add the most likely rating tag.")
@click.option(
    "--tags-csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Tag list (default: selected_tags.csv beside the model).",
)
@click.option("--blacklist", multiple=True, help="A tag never written (repeatable).")
@click.option("--max-tags", type=click.IntRange(min=1), default=30, show_default=True)
@click.option(
    "--implications",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV of more tag implications (antecedent,consequent).",
)
@click.option("--prompt", default=None, help="Captioner prompt / Florence-2 task token.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=60, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--overwrite", is_flag=True, help="Replace existing .txt captions too.")
@click.option("--allow-download", is_flag=True, help="Let --model be a hub id (network).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def caption(
    directory: Path,
    model: str,
    kind: str | None,
    trigger: str | None,
    class_token: str | None,
    base: str,
    keep_underscores: bool,
    general_threshold: float,
    character_threshold: float,
    include_rating: bool,
    tags_csv: Path | None,
    blacklist: tuple[str, ...],
    max_tags: int,
    implications: Path | None,
    prompt: str | None,
    max_new_tokens: int,
    batch_size: int,
    device: str,
    overwrite: bool,
    allow_download: bool,
    as_json: bool,
) -> None:
    """Caption DIRECTORY's images (a flat folder or kohya's N_name/ layout)."""
    from trainer.captioners import (
        CaptionerError,
        caption_files,
        find_images,
        guess_kind,
        load_captioner,
    )

    config = CaptionerConfig(
        kind=CaptionerKind(kind) if kind else guess_kind(model), model=model,
        tags_csv=tags_csv, general_threshold=general_threshold,
        character_threshold=character_threshold, include_rating=include_rating,
        prompt=prompt, max_new_tokens=max_new_tokens, batch_size=batch_size, device=device,
        allow_download=allow_download,
    )  # fmt: skip
    replace = style_for_base(base).replace_underscores and not keep_underscores
    try:
        extra = parse_implications(implications.read_text("utf-8")) if implications else None
    except (OSError, UnicodeDecodeError) as error:
        raise click.ClickException(f"{implications}: {error}") from error
    rules = CaptionRules.build(trigger=trigger, class_token=class_token, blacklist=blacklist,
                               max_tags=max_tags, replace_underscores=replace,
                               extra_implications=extra)  # fmt: skip
    images = find_images(directory)
    todo = [p for p in images if overwrite or not _has_caption(p)]
    try:
        captioner = load_captioner(config)
        started = time.monotonic()
        with tqdm(total=len(todo), desc="caption", unit="img", file=sys.stderr,
                  disable=None) as bar:  # fmt: skip
            texts = caption_files(captioner, todo, rules, batch_size=batch_size,
                                  progress=bar.update)  # fmt: skip
        seconds = time.monotonic() - started
        for path, text in zip(todo, texts, strict=True):
            path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    except (CaptionerError, OSError) as error:
        raise click.ClickException(str(error)) from error
    rate = len(todo) / seconds if seconds > 0 and todo else 0.0
    if as_json:
        click.echo(json.dumps({
            "model": model, "kind": config.kind.value, "device": captioner.device,
            "images": len(images), "written": len(todo), "skipped": len(images) - len(todo),
            "seconds": round(seconds, 3), "images_per_second": round(rate, 2),
            "captions": {str(p.relative_to(directory)): t for p, t in zip(todo, texts,
                                                                            strict=True)},
        }, indent=2))  # fmt: skip
        return
    click.echo(
        f"{len(todo)} captioned, {len(images) - len(todo)} skipped (already captioned) "
        f"with {config.kind.value} {model} on {captioner.device}: {rate:.2f} images/s"
    )


def _has_caption(image: Path) -> bool:
    text = image.with_suffix(".txt")
    return text.is_file() and bool(text.read_text(encoding="utf-8", errors="replace").strip())

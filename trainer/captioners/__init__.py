"""Auto-captioning models for a first pass over a dataset; they know no Discord, no DB.

Two kinds (:class:`lab.autocaption.CaptionerKind`): a **tagger** (an ONNX model of the
WD14 family run with onnxruntime, :mod:`trainer.captioners.wd14`) and a **captioner**
(a transformers image-to-text model such as BLIP or Florence-2,
:mod:`trainer.captioners.hf`). Both answer :meth:`Captioner.caption` with raw tags
(most confident first) or one sentence per image; :func:`caption_files` runs one over
image files in batches and applies the lab's rules (:func:`lab.autocaption.apply_rules`).

onnxruntime, torch and transformers are imported when a model is loaded, never here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image

from lab.autocaption import CaptionerConfig, CaptionerKind, CaptionRules, apply_rules
from lab.captions import join_tags
from trainer.errors import CaptionerError

__all__ = [
    "Captioner",
    "CaptionerError",
    "caption_files",
    "find_images",
    "guess_kind",
    "load_captioner",
    "open_rgb",
]

log = logging.getLogger(__name__)


class Captioner(Protocol):
    """A loaded model: images in, a first-pass caption (list of tags) per image out."""

    name: str
    device: str

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]: ...


def guess_kind(model: str) -> CaptionerKind:
    """A ``.onnx`` file, or a folder holding ``model.onnx``, is a tagger; else a captioner."""
    path = Path(model)
    if path.suffix.lower() == ".onnx" or (path.is_dir() and (path / "model.onnx").is_file()):
        return CaptionerKind.TAGGER
    return CaptionerKind.CAPTIONER


def load_captioner(config: CaptionerConfig) -> Captioner:
    """Load the model `config` names (raises :class:`CaptionerError` with what to fix)."""
    if config.kind is CaptionerKind.TAGGER:
        from trainer.captioners.wd14 import OnnxTagger

        return OnnxTagger.load(config)
    from trainer.captioners.hf import TransformersCaptioner

    return TransformersCaptioner.load(config)


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


def find_images(directory: Path) -> list[Path]:
    """The images under `directory` (a flat folder or kohya's ``N_name/`` layout), sorted;
    hidden files and folders are skipped."""
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )


def open_rgb(path: Path) -> Image.Image:
    """An image as RGB; transparency is flattened onto white (what taggers were trained on)."""
    with Image.open(path) as image:
        image.load()
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            canvas.alpha_composite(rgba)
            return canvas.convert("RGB")
        return image.convert("RGB")


def caption_files(
    captioner: Captioner,
    files: Sequence[Path],
    rules: CaptionRules,
    *,
    batch_size: int = 8,
    progress: Callable[[int], object] | None = None,
) -> list[str]:
    """The lab's caption of each file (in order), captioned ``batch_size`` at a time;
    ``progress(n)`` is called after each batch with the number of images it held."""
    captions: list[str] = []
    for start in range(0, len(files), max(1, batch_size)):
        batch = files[start : start + max(1, batch_size)]
        images = [open_rgb(path) for path in batch]
        try:
            raw = captioner.caption(images)
        finally:
            for image in images:
                image.close()
        captions.extend(join_tags(apply_rules(tags, rules)) for tags in raw)
        if progress is not None:
            progress(len(batch))
    return captions

"""WD14-family taggers (SmilingWolf's wd-*-tagger models) with onnxruntime.

The model contract, as the reference tagger uses it: input ``[batch, S, S, 3]`` float32
**BGR** pixels in 0–255 (no normalisation), the image padded to a square with white
and resized (bicubic) to ``S`` (448 for the v3 models); output ``[batch, tags]``
probabilities (the sigmoid is inside the model), one per row of ``selected_tags.csv``
(``tag_id,name,category,count``; category 0 general, 4 character, 9 rating).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lab.autocaption import CaptionerConfig, Prediction, select_tags
from trainer.errors import CaptionerError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TagList:
    names: list[str]
    categories: list[int]


def read_tag_csv(path: Path) -> TagList:
    """The tag list of a WD14 model (``selected_tags.csv``)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise CaptionerError(f"Cannot read the tag list {path}: {exc.strerror or exc}.") from exc
    if not rows or not {"name", "category"} <= set(rows[0]):
        raise CaptionerError(f"{path} is not a WD14 tag list (needs name and category columns).")
    try:
        return TagList([r["name"] for r in rows], [int(r["category"]) for r in rows])
    except ValueError as exc:
        raise CaptionerError(f"{path}: a category is not a number ({exc}).") from exc


def prepare(image: Image.Image, size: int) -> np.ndarray:
    """One image as the model wants it: white-padded square, ``size``², BGR float32."""
    width, height = image.size
    side = max(width, height)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image.convert("RGB"), ((side - width) // 2, (side - height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.float32)[:, :, ::-1]


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise CaptionerError(
            "device = 'cuda' but this onnxruntime has no CUDA provider "
            "(install onnxruntime-gpu, or use device = 'auto')."
        )
    wanted = ["CUDAExecutionProvider"] if device in ("cuda", "auto") else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


class OnnxTagger:
    """A loaded WD14 tagger (see the module docstring for the contract)."""

    def __init__(self, session: Any, tags: TagList, config: CaptionerConfig, name: str) -> None:
        self.session = session
        self.tags = tags
        self.config = config
        self.name = name
        model_input = session.get_inputs()[0]
        self.input_name: str = model_input.name
        shape = model_input.shape
        if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int):
            raise CaptionerError(f"{name}: expected an NHWC image input, got shape {shape}.")
        self.size: int = shape[1]
        outputs = session.get_outputs()[0].shape
        if isinstance(outputs[-1], int) and outputs[-1] != len(tags.names):
            raise CaptionerError(
                f"{name}: the model scores {outputs[-1]} tags but the tag list has "
                f"{len(tags.names)}; they do not belong together."
            )
        self.device = "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"

    @classmethod
    def load(cls, config: CaptionerConfig) -> OnnxTagger:
        path = Path(config.model).expanduser()
        model = path / "model.onnx" if path.is_dir() else path
        if not model.is_file():
            raise CaptionerError(
                f"No tagger model at {model}: download model.onnx and selected_tags.csv "
                "(e.g. SmilingWolf/wd-vit-tagger-v3) and give that folder."
            )
        tags = read_tag_csv(config.tags_csv or model.parent / "selected_tags.csv")
        import onnxruntime as ort

        providers = _providers(config.device)
        try:
            session = ort.InferenceSession(str(model), providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise CaptionerError(f"onnxruntime cannot load {model}: {exc}") from exc
        tagger = cls(session, tags, config, name=model.parent.name or model.name)
        log.info("tagger %s loaded: %d tags, %dpx, %s", tagger.name, len(tags.names),
                 tagger.size, tagger.device)  # fmt: skip
        return tagger

    def scores(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``[len(images), tags]`` probabilities."""
        batch = np.stack([prepare(image, self.size) for image in images])
        (probabilities,) = self.session.run(None, {self.input_name: batch})[:1]
        return np.asarray(probabilities, dtype=np.float32)

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]:
        """Tags over the thresholds per image, character tags first, then general."""
        results = []
        for row in self.scores(images):
            predictions = (
                Prediction(name, category, float(score))
                for name, category, score in zip(
                    self.tags.names, self.tags.categories, row, strict=True
                )
            )
            results.append(
                select_tags(
                    predictions,
                    general_threshold=self.config.general_threshold,
                    character_threshold=self.config.character_threshold,
                    include_rating=self.config.include_rating,
                )
            )
        return results

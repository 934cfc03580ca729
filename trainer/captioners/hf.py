"""Natural-language captioners: transformers image-to-text models (BLIP, Florence-2,
GIT, VisionEncoderDecoder…) loaded with ``AutoProcessor`` and
``AutoModelForImageTextToText`` from a local folder, or from the hub only when the
operator allowed downloads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from lab.autocaption import CaptionerConfig
from trainer.errors import CaptionerError

log = logging.getLogger(__name__)
_TASK_TOKEN = re.compile(r"^<[A-Z_]+>$")


def _device(wanted: str) -> str:
    import torch

    if wanted == "cuda" and not torch.cuda.is_available():
        raise CaptionerError("device = 'cuda' but torch sees no CUDA GPU (use device = 'auto').")
    return "cuda" if wanted in ("cuda", "auto") and torch.cuda.is_available() else "cpu"


class TransformersCaptioner:
    """A loaded image-to-text model; one sentence per image."""

    def __init__(self, processor: Any, model: Any, config: CaptionerConfig, name: str) -> None:
        self.processor = processor
        self.model = model
        self.config = config
        self.name = name
        self.device = str(model.device.type)

    @classmethod
    def load(cls, config: CaptionerConfig) -> TransformersCaptioner:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        source = config.model
        local = Path(source).expanduser()
        if local.exists():
            if not (local / "config.json").is_file():
                raise CaptionerError(f"{local} is not a transformers model (no config.json).")
            source = str(local)
        elif not config.allow_download:
            raise CaptionerError(
                f"No captioner model at {local}. Give a local folder, or set allow_download "
                "for a hub id (the worker needs network access then)."
            )
        device = _device(config.device)
        options = {"local_files_only": not config.allow_download,
                   "trust_remote_code": config.trust_remote_code}  # fmt: skip
        try:
            processor = AutoProcessor.from_pretrained(source, **options)
            model = AutoModelForImageTextToText.from_pretrained(source, **options)
        except (OSError, ValueError, KeyError) as exc:
            raise CaptionerError(f"transformers cannot load {source}: {exc}") from exc
        model = model.to(device).eval()
        captioner = cls(processor, model, config, name=Path(source).name)
        log.info("captioner %s loaded (%s) on %s", captioner.name,
                 type(model).__name__, device)  # fmt: skip
        return captioner

    def _inputs(self, images: Sequence[Image.Image]) -> Any:
        prompt = self.config.prompt
        if prompt:
            inputs = self.processor(images=list(images), text=[prompt] * len(images),
                                    return_tensors="pt", padding=True)  # fmt: skip
        else:
            inputs = self.processor(images=list(images), return_tensors="pt")
        inputs = inputs.to(self.model.device)
        dtype = self.model.dtype
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        return inputs

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]:
        """One cleaned sentence per image (a conditional prompt's words removed)."""
        import torch

        inputs = self._inputs(images)
        with torch.inference_mode():
            generated = self.model.generate(
                **inputs, max_new_tokens=self.config.max_new_tokens, do_sample=False
            )
        texts = self.processor.batch_decode(generated, skip_special_tokens=True)
        return [[clean_sentence(text, self.config.prompt)] for text in texts]


def clean_sentence(text: str, prompt: str | None = None) -> str:
    """A generated caption as one line: the echoed prompt (BLIP repeats a conditional
    prefix; a Florence-2 task token is not text) and the final full stop removed."""
    text = " ".join(text.split())
    if prompt and not _TASK_TOKEN.match(prompt) and text.lower().startswith(prompt.lower()):
        text = text[len(prompt) :].strip()
    return text.rstrip(".").strip()

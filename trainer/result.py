"""What a training run hands back (:func:`trainer.loop.train` returns it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainResult:
    """What a run produced and how it went."""

    output_dir: Path
    final_path: Path | None
    saved: list[Path] = field(default_factory=list)
    state_dir: Path | None = None
    epoch: int = 0
    global_step: int = 0
    stopped: bool = False
    latents_encoded: int = 0
    latents_reused: int = 0
    captions_encoded: int = 0
    steps_per_second: float = 0.0
    images_per_second: float = 0.0
    weight_grid: Path | None = None
    """The grid over ``sample_weights`` (WebP, under Discord's upload limit)."""

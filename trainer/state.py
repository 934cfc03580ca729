"""A resumable training state: everything needed to continue exactly where a run stopped.

Layout of a state directory::

    state.json          counters (epoch, global step, batch position), seed, run shape
    lora.safetensors    the LoRA weights in PEFT naming, per component
    training.pt         optimizer, scheduler, gradient scaler and RNG states

``training.pt`` holds only tensors and plain containers and is read with
``torch.load(weights_only=True)``, so a state directory cannot run code when loaded.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from trainer.errors import ResumeError

logger = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass(frozen=True)
class Position:
    """Where a run stands: ``epoch`` epochs are complete, plus ``batch`` batches of the next."""

    epoch: int
    batch: int
    global_step: int
    seed: int


@dataclass(frozen=True)
class RunShape:
    """What must match for a state to be resumed by a run (else the weights don't fit)."""

    network_dim: int
    network_alpha: float
    network_args: str
    train_text_encoder: bool
    batch_size: int
    batches_per_epoch: int


def capture_rng() -> dict[str, Any]:
    """Global RNG states (LoRA dropout draws from torch's global generator)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    directory: Path,
    *,
    position: Position,
    shape: RunShape,
    lora: dict[str, dict[str, torch.Tensor]],
    training: dict[str, Any],
) -> Path:
    """Write a state directory atomically (a half-written one is never left in place)."""
    partial = directory.with_name(directory.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    flat = {f"{part}::{key}": t.contiguous() for part, sd in lora.items() for key, t in sd.items()}
    save_file(flat, str(partial / "lora.safetensors"))
    torch.save({**training, "rng": capture_rng()}, partial / "training.pt")
    meta = {"version": STATE_VERSION, "position": asdict(position), "shape": asdict(shape)}
    (partial / "state.json").write_text(json.dumps(meta, indent=2))
    if directory.exists():
        shutil.rmtree(directory)
    partial.rename(directory)
    logger.info("saved training state %s (step %d)", directory, position.global_step)
    return directory


@dataclass
class LoadedState:
    position: Position
    shape: RunShape
    lora: dict[str, dict[str, torch.Tensor]]
    training: dict[str, Any]


def load_state(directory: Path) -> LoadedState:
    """Read a state directory written by :func:`save_state`."""
    meta_path = directory / "state.json"
    if not meta_path.exists():
        raise ResumeError(f"{directory} is not a training state (no state.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != STATE_VERSION:
        raise ResumeError(f"{directory}: state version {meta.get('version')} is not supported")
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for flat_key, tensor in load_file(str(directory / "lora.safetensors")).items():
        part, _, key = flat_key.partition("::")
        lora.setdefault(part, {})[key] = tensor
    training = torch.load(directory / "training.pt", weights_only=True)
    return LoadedState(Position(**meta["position"]), RunShape(**meta["shape"]), lora, training)


def check_shape(saved: RunShape, current: RunShape) -> None:
    """Refuse a state whose network or batching differs from this run's."""
    differences = [
        f"{name}: state has {getattr(saved, name)!r}, config has {getattr(current, name)!r}"
        for name in RunShape.__dataclass_fields__
        if getattr(saved, name) != getattr(current, name)
    ]
    if differences:
        raise ResumeError("cannot resume, the run differs: " + "; ".join(differences))

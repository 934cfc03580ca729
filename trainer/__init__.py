"""The standalone LoRA trainer (diffusers + PEFT); it knows no Discord and no database.

Entry points::

    from trainer import load_config, train
    result = train(load_config(path, overrides={...}), callbacks, commands)

``train`` and the torch-heavy modules are imported on first use, so importing
``trainer`` (or reading a config) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.training.config import TrainConfig, build_config, load_config
    from trainer.callbacks import Callbacks, Checkpoint, Commands, Progress
    from trainer.loop import TrainResult, train

__all__ = [
    "Callbacks",
    "Checkpoint",
    "Commands",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "build_config",
    "load_config",
    "train",
]

_LAZY = {
    "Callbacks": "trainer.callbacks",
    "Checkpoint": "trainer.callbacks",
    "Commands": "trainer.callbacks",
    "Progress": "trainer.callbacks",
    "TrainConfig": "lab.training.config",
    "build_config": "lab.training.config",
    "load_config": "lab.training.config",
    "TrainResult": "trainer.loop",
    "train": "trainer.loop",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trainer' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

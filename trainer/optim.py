"""Optimizers and learning-rate schedules, built from kohya's option names."""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.optimization import get_scheduler

from trainer.errors import ConfigError

logger = logging.getLogger(__name__)


def build_optimizer(
    name: str,
    param_groups: list[dict[str, Any]],
    *,
    learning_rate: float,
    optimizer_kwargs: dict[str, Any],
) -> tuple[torch.optim.Optimizer, str]:
    """The optimizer ``name`` (kohya's ``optimizer_type``) and its kohya-style description
    (``ss_optimizer``); ``optimizer_kwargs`` are the parsed ``optimizer_args``."""
    kwargs = dict(optimizer_kwargs)  # the defaults below must not leak into the caller's
    if name == "AdamW":
        if "fused" not in kwargs and "foreach" not in kwargs:
            # One kernel per step instead of one per tensor: on CUDA, and on the CPU too
            # (torch ≥ 2.4), where it is ~7× faster than the per-tensor loop.
            kwargs["fused"] = True
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            param_groups, lr=learning_rate, **kwargs
        )
        label = "torch.optim.adamw.AdamW"
    elif name == "AdamW8bit":
        bnb = _require("bitsandbytes", name)
        optimizer = bnb.optim.AdamW8bit(param_groups, lr=learning_rate, **kwargs)
        label = "bitsandbytes.optim.adamw.AdamW8bit"
    elif name == "Lion":
        lion = _require("lion_pytorch", name)
        optimizer = lion.Lion(param_groups, lr=learning_rate, **kwargs)
        label = "lion_pytorch.lion_pytorch.Lion"
    elif name == "Prodigy":
        prodigy = _require("prodigyopt", name)
        optimizer = prodigy.Prodigy(param_groups, lr=learning_rate, **kwargs)
        label = "prodigyopt.prodigy.Prodigy"
    elif name in ("DAdaptAdam", "DAdaptation"):
        # Defazio & Mishchenko 2023, "Learning-Rate-Free Learning by D-Adaptation": lr ≈ 1.
        dadapt = _require("dadaptation", name)
        optimizer = dadapt.DAdaptAdam(param_groups, lr=learning_rate, **kwargs)
        label = "dadaptation.dadapt_adam.DAdaptAdam"
    elif name == "Adafactor":
        from transformers.optimization import Adafactor

        kwargs.setdefault("scale_parameter", False)
        kwargs.setdefault("relative_step", False)
        kwargs.setdefault("warmup_init", False)
        optimizer = Adafactor(param_groups, lr=learning_rate, **kwargs)
        label = "transformers.optimization.Adafactor"
    else:  # pragma: no cover - the config's Literal rules this out
        raise ConfigError(f"unknown optimizer_type {name!r}")
    shown = {k: v for k, v in kwargs.items() if k != "fused"}
    if shown:
        label += "(" + ",".join(f"{k}={v}" for k, v in shown.items()) + ")"
    return optimizer, label


_PACKAGES = {
    "AdamW8bit": "bitsandbytes",
    "Lion": "lion_pytorch",
    "Prodigy": "prodigyopt",
    "DAdaptAdam": "dadaptation",
    "DAdaptation": "dadaptation",
}


def check_optimizer_available(name: str) -> None:
    """Fail before minutes of model loading and caching if the package of the optimizer
    ``name`` is missing."""
    module = _PACKAGES.get(name)
    if module is not None and importlib.util.find_spec(module) is None:
        _require(module, name)


def _require(module: str, optimizer: str) -> Any:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"optimizer_type {optimizer!r} needs the {module!r} package; install it "
            "(pip install " + module.replace("_", "-") + ") or use optimizer_type = 'AdamW'"
        )
    return importlib.import_module(module)


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps the run takes, and over how many epochs."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    num_epochs: int


def plan_steps(
    batches_per_epoch: int,
    *,
    gradient_accumulation_steps: int,
    max_train_epochs: int | None,
    max_train_steps: int | None,
) -> StepPlan:
    """Steps per epoch after gradient accumulation; ``max_train_epochs`` wins over
    ``max_train_steps``, as in kohya."""
    steps_per_epoch = math.ceil(batches_per_epoch / gradient_accumulation_steps)
    if max_train_epochs is not None:
        total_steps = max_train_epochs * steps_per_epoch
    else:
        total_steps = max_train_steps or 0
    return StepPlan(
        batches_per_epoch=batches_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        num_epochs=math.ceil(total_steps / steps_per_epoch),
    )


def warmup_steps(lr_warmup_steps: float, total_steps: int) -> int:
    """``lr_warmup_steps`` as steps; below 1 it is a fraction of the total (kohya)."""
    if lr_warmup_steps < 1:
        return math.ceil(lr_warmup_steps * total_steps)
    return int(lr_warmup_steps)


def build_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    *,
    warmup: int,
    num_cycles: int,
    power: float,
) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' schedule ``name`` (kohya's ``lr_scheduler``) with ``warmup`` steps;
    ``constant`` with warmup becomes ``constant_with_warmup`` (kohya does the same)."""
    if name == "constant" and warmup > 0:
        name = "constant_with_warmup"
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total_steps,
        num_cycles=num_cycles,
        power=power,
    )

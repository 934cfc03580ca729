"""Optimizers and learning-rate schedules, built from kohya's option names."""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType, get_scheduler

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

        # kohya's defaults: Adafactor's own relative step size (which warmup_init needs);
        # scale_parameter is transformers' default (True).
        kwargs.setdefault("relative_step", True)
        if kwargs.get("warmup_init"):
            kwargs["relative_step"] = True
        lr: float | None = learning_rate
        if kwargs["relative_step"]:
            lr = None  # Adafactor refuses a manual lr with relative_step; groups drop theirs
            param_groups = [{k: v for k, v in g.items() if k != "lr"} for g in param_groups]
        optimizer = Adafactor(param_groups, lr=lr, **kwargs)
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
    scheduler_args: Mapping[str, Any] | None = None,
    scheduler_type: str | None = None,
    learning_rate: float | None = None,
) -> torch.optim.lr_scheduler.LRScheduler:
    """diffusers' schedule ``name`` (kohya's ``lr_scheduler``) with ``warmup`` steps;
    ``constant`` with warmup becomes ``constant_with_warmup`` (kohya does the same).
    ``scheduler_args`` are the parsed ``lr_scheduler_args``; ``scheduler_type`` (kohya's
    ``lr_scheduler_type``) names a ``torch.optim.lr_scheduler`` class built from them;
    ``learning_rate`` is the rate the adafactor schedule reports (the optimizer's own
    when not given)."""
    extra = dict(scheduler_args or {})
    # kohya: Adafactor with relative_step always gets the adafactor schedule.
    if name == "adafactor" or optimizer.defaults.get("relative_step"):
        if learning_rate is None:
            learning_rate = optimizer.defaults.get("lr") or 0.0
        return adafactor_schedule(optimizer, learning_rate, warmup)
    if name == "constant" and warmup > 0:
        name = "constant_with_warmup"
    if scheduler_type:
        # kohya's custom schedule: a torch.optim.lr_scheduler class given lr_scheduler_args.
        class_name = scheduler_type.removeprefix("torch.optim.lr_scheduler.")
        schedule_class = getattr(torch.optim.lr_scheduler, class_name)
        return _with_args(schedule_class, optimizer, extra)
    if not extra:
        return get_scheduler(
            name,
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total_steps,
            num_cycles=num_cycles,
            power=power,
        )
    kwargs: dict[str, Any] = {"num_warmup_steps": warmup}
    if name not in ("constant", "constant_with_warmup"):
        kwargs["num_training_steps"] = total_steps
    if name == "cosine_with_restarts":
        kwargs["num_cycles"] = num_cycles
    if name == "polynomial":
        kwargs["power"] = power
    if name == "constant":
        kwargs.clear()
    function = TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)]
    return _with_args(function, optimizer, {**kwargs, **extra})


def _with_args(
    factory: Any, optimizer: torch.optim.Optimizer, kwargs: dict[str, Any]
) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule built with ``lr_scheduler_args``; a wrong argument is a config error."""
    try:
        return factory(optimizer, **kwargs)
    except TypeError as error:
        raise ConfigError(f"lr_scheduler_args {sorted(kwargs)}: {error}") from None


def adafactor_schedule(
    optimizer: torch.optim.Optimizer, learning_rate: float, warmup: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """kohya's ``lr_scheduler = "adafactor"``: with ``relative_step=True`` Adafactor
    computes its own step size (transformers' ``AdafactorSchedule`` only reports it);
    otherwise the learning rate stays constant after the warmup."""
    from transformers.optimization import AdafactorSchedule

    if optimizer.defaults.get("relative_step"):
        return AdafactorSchedule(optimizer, learning_rate)
    name = "constant_with_warmup" if warmup > 0 else "constant"
    return get_scheduler(name, optimizer, num_warmup_steps=warmup)

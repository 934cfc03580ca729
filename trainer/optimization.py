"""The optimizer and schedule of a run, over the network's parameter groups.

:mod:`trainer.optim` builds an optimizer or schedule from the values it is given; this
module reads those values off the :class:`TrainConfig` and groups the parameters
(the UNet's, and each trained text encoder's at its own rate).
"""

from __future__ import annotations

import torch

from lab.training.config import TrainConfig, parse_key_values
from trainer.network import LoraNetwork, is_adapter_parameter
from trainer.optim import StepPlan, build_optimizer, build_scheduler, warmup_steps


def build_optimization(
    config: TrainConfig, network: LoraNetwork, plan: StepPlan
) -> tuple[
    torch.optim.Optimizer, str, torch.optim.lr_scheduler.LRScheduler, list[torch.nn.Parameter]
]:
    """The optimizer over the network's parameters (the UNet's and the text encoders' at
    their own rates), its ``ss_optimizer`` label, the schedule, and the trained parameters."""
    groups = [{"params": network.unet_parameters(), "lr": config.effective_unet_lr}]
    if config.train_text_encoder:
        groups.extend(text_encoder_groups(network, config.text_encoder_lrs))
    trainable = [p for g in groups for p in g["params"]]
    optimizer, label = build_optimizer(
        config.optimizer_type,
        groups,
        learning_rate=config.learning_rate,
        optimizer_kwargs=config.optimizer_kwargs(),
    )
    lr_scheduler = build_scheduler(
        config.lr_scheduler,
        optimizer,
        plan.total_steps,
        warmup=warmup_steps(config.lr_warmup_steps, plan.total_steps),
        num_cycles=config.lr_scheduler_num_cycles,
        power=config.lr_scheduler_power,
        scheduler_args=parse_key_values(config.lr_scheduler_args, "lr_scheduler_args"),
        scheduler_type=config.lr_scheduler_type,
        learning_rate=config.learning_rate,
    )
    return optimizer, label, lr_scheduler, trainable


def text_encoder_groups(
    network: LoraNetwork, learning_rates: tuple[float, float]
) -> list[dict[str, object]]:
    """One optimizer group per trained text encoder, each with its own learning rate
    (kohya's ``text_encoder_lr = [TE1, TE2]``); one group when both rates agree."""
    encoders = [m for n, m in network.components().items() if n != "unet"]
    if len(encoders) < 2 or learning_rates[0] == learning_rates[1]:
        return [{"params": network.text_encoder_parameters(), "lr": learning_rates[0]}]
    return [
        {
            "params": [p for n, p in encoder.named_parameters() if is_adapter_parameter(n)],
            "lr": lr,
        }
        for encoder, lr in zip(encoders, learning_rates, strict=False)
    ]

"""Each optimizer and schedule, built from kohya's option names, does one step as asked.

One optimizer step on a small module is enough to show the optimizer is the one named,
got its arguments and moves the weights; the file a run saves does not depend on the
optimizer, so its save-and-reload is proven once per network type (test_networks.py).
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from lab.training.config import parse_key_values
from trainer.optim import build_optimizer, build_scheduler, warmup_steps

# (optimizer_type, learning_rate, optimizer_args, package, label) — the guides' settings.
OPTIMIZERS = [
    ("AdamW", 1e-3, ["weight_decay=0.12", "betas=0.9,0.99"], None, "torch.optim.adamw.AdamW"),
    ("AdamW", 1e-3, ["foreach=True"], None, "torch.optim.adamw.AdamW"),
    ("Adafactor", 1e-3, [], None, "transformers.optimization.Adafactor"),
    ("Lion", 1e-4, ["weight_decay=0.01"], "lion_pytorch", "lion_pytorch.lion_pytorch.Lion"),
    # Prodigy as the guides run it: lr 1, decoupled weight decay, safeguarded warmup.
    (
        "Prodigy",
        1.0,
        ["decouple=True", "weight_decay=0.01", "betas=0.9,0.99", "use_bias_correction=True"],
        "prodigyopt",
        "prodigyopt.prodigy.Prodigy",
    ),
    (
        "DAdaptAdam",
        1.0,
        ["decouple=True", "weight_decay=0.01"],
        "dadaptation",
        "dadaptation.dadapt_adam.DAdaptAdam",
    ),
    ("AdamW8bit", 1e-3, [], "bitsandbytes", "bitsandbytes.optim.adamw.AdamW8bit"),
]


@pytest.mark.parametrize(
    ("name", "lr", "args", "package", "label"),
    OPTIMIZERS,
    ids=[f"{o[0]}-{i}" for i, o in enumerate(OPTIMIZERS)],
)
def test_optimizer_takes_its_arguments_and_steps(
    name: str, lr: float, args: list[str], package: str | None, label: str
) -> None:
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    torch.manual_seed(0)
    # A LoRA-shaped pair: "up" starts at zero, as the network's does.
    down = torch.nn.Linear(8, 2, bias=False)
    up = torch.nn.Linear(2, 8, bias=False)
    torch.nn.init.zeros_(up.weight)
    groups = [{"params": [*down.parameters(), *up.parameters()], "lr": lr}]
    kwargs = parse_key_values(args, "optimizer_args")
    optimizer, described = build_optimizer(name, groups, learning_rate=lr, optimizer_kwargs=kwargs)

    assert described.startswith(label)  # ss_optimizer, as kohya writes it
    assert all(f"{k}={v}" in described for k, v in kwargs.items())
    group = optimizer.param_groups[0]
    for key, value in kwargs.items():
        assert group[key] == value, key  # the option reached the optimizer
    if name == "AdamW" and "foreach" not in kwargs:
        assert group["fused"] is True  # one kernel per step, unless the user chose
    x = torch.randn(4, 8)
    loss = (up(down(x)) - x).pow(2).mean()
    loss.backward()
    optimizer.step()
    assert float(up.weight.abs().max()) > 0  # B starts at zero: the optimizer moved it
    assert kwargs == parse_key_values(args, "optimizer_args")  # the caller's dict is untouched


def test_warmup_below_one_is_a_share_of_the_steps() -> None:
    assert warmup_steps(0.25, 8) == 2
    assert warmup_steps(0.5, 12) == 6
    assert warmup_steps(0.1, 12) == 2  # rounded up, as kohya
    assert warmup_steps(3, 12) == 3
    assert warmup_steps(0, 12) == 0


@pytest.mark.parametrize(
    ("scheduler", "extra"),
    [
        ("cosine_with_restarts", {"num_cycles": 2, "power": 1.0}),
        ("polynomial", {"num_cycles": 1, "power": 2.0}),
        ("constant", {"num_cycles": 1, "power": 1.0}),
    ],
)
def test_schedules_with_warmup(scheduler: str, extra: dict) -> None:
    peak, warmup, total = 1e-3, 2, 8
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    schedule = build_scheduler(scheduler, optimizer, total, warmup=warmup, **extra)
    rates = []
    for _ in range(total):  # the loop reads the rate after each optimizer step
        optimizer.step()
        schedule.step()
        rates.append(schedule.get_last_lr()[0])

    def expected(n: int) -> float:
        if n < warmup:
            return peak * n / warmup
        progress = (n - warmup) / (total - warmup)
        if scheduler == "constant":  # with warmup it becomes constant_with_warmup
            return peak
        if scheduler == "cosine_with_restarts":
            if progress >= 1:
                return 0.0
            return peak * 0.5 * (1 + math.cos(math.pi * ((2 * progress) % 1)))
        lr_end = 1e-7  # diffusers' polynomial default
        return (peak - lr_end) * (1 - progress) ** 2 + lr_end

    assert rates == pytest.approx([expected(n) for n in range(1, total + 1)])
    assert rates[0] < rates[1] == pytest.approx(peak)
    if scheduler == "cosine_with_restarts":
        assert rates[3] < rates[4] == pytest.approx(peak)  # the restart, halfway

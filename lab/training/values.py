"""Small parsers for config values: kohya's ``key=value`` lists, CLI overrides, and
the names of torch's schedule classes (read without importing torch)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from typing import Any

from lab.training.errors import ConfigError

# torch.optim.lr_scheduler's classes that need only the optimizer and keyword arguments.
TORCH_SCHEDULES = frozenset(
    {
        "CosineAnnealingLR",
        "CosineAnnealingWarmRestarts",
        "ExponentialLR",
        "LinearLR",
        "StepLR",
        "MultiStepLR",
        "ConstantLR",
        "PolynomialLR",
        "OneCycleLR",
    }
)


def is_torch_schedule(name: str) -> bool:
    """Names of torch's schedule classes, read without importing torch."""
    short = name.removeprefix("torch.optim.lr_scheduler.")
    return short in TORCH_SCHEDULES


def parse_key_values(items: Iterable[str], what: str) -> dict[str, Any]:
    """kohya's ``["weight_decay=0.1", "betas=0.9,0.99"]`` → ``{"weight_decay": 0.1, …}``."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected key=value, got {item!r}")
        parsed[key.strip()] = _parse_scalar_or_tuple(raw.strip())
    return parsed


def _parse_scalar_or_tuple(raw: str) -> Any:
    if "," in raw:
        return tuple(_parse_scalar_or_tuple(part.strip()) for part in raw.split(","))
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    """A CLI override ``key=value``; the value is read as TOML (``1e-4``, ``true``,
    ``[1, 2]``) and falls back to a plain string (``output_name=my lora``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"an override must look like key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value

"""`/train config`: a preset plus `key=value` overrides, checked with the same model the
trainer runs on (`lab.training`), so a run never fails on a config typo."""

from __future__ import annotations

from typing import Any

from bot.errors import BotError
from lab.training import PRESETS, ConfigError
from lab.training.allowed import TrainingLimits
from lab.training.job import check_job_config

PRESET_KINDS = ("character", "style", "concept")


def parse_value(raw: str) -> Any:
    """``8`` → 8, ``1e-4`` → 0.0001, ``true`` → True, anything else stays text."""
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def parse_overrides(text: str) -> dict[str, Any]:
    """``"max_train_epochs=8 network_dim=16"`` (spaces, commas or semicolons between)."""
    values: dict[str, Any] = {}
    for token in text.replace(";", " ").replace(", ", " ").split():
        key, sep, raw = token.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not raw:
            raise BotError(f"`{token}`: write overrides as key=value, e.g. max_train_epochs=8.")
        values[key] = parse_value(raw.strip().rstrip(","))
    return values


def build_config(
    family: str, kind: str, overrides: str, limits: TrainingLimits | None = None
) -> tuple[str, dict[str, Any]]:
    """(preset, the job configuration to store) or a `BotError` saying what is wrong."""
    preset = f"{family}-{kind}"
    if preset not in PRESETS:
        raise BotError(f"There is no `{preset}` preset yet. Presets: {', '.join(sorted(PRESETS))}.")
    values = parse_overrides(overrides)
    try:
        check_job_config(preset, values, limits or TrainingLimits())
    except ConfigError as error:
        raise BotError(f"That training configuration is not valid: {error}") from None
    return preset, {"preset": preset, **values}

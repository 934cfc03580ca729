"""`/train config`: a preset name and `key=value` overrides, checked before storing.

TODO: validate against the trainer's versioned config model once it moves to
``lab.training`` (the bot may not import ``trainer``). Until then the bot checks the
preset name and the type and range of each override it knows, and refuses the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.errors import BotError

PRESET_KINDS = ("character", "style", "concept")


def preset_names(family: str) -> list[str]:
    return [f"{family}-{kind}" for kind in PRESET_KINDS]


def _number(kind: type, low: float, high: float) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _resolution(raw: str) -> str:
    parts = [int(p) for p in raw.replace("x", ",").split(",")]
    if len(parts) not in (1, 2) or any(p % 64 or not 256 <= p <= 2048 for p in parts):
        raise ValueError("must be a multiple of 64 between 256 and 2048, like 512 or 768,512")
    return ",".join(map(str, parts * (2 if len(parts) == 1 else 1)))


OVERRIDES: dict[str, Callable[[str], Any]] = {
    "max_train_epochs": _number(int, 1, 100),
    "save_every_n_epochs": _number(int, 1, 100),
    "train_batch_size": _number(int, 1, 16),
    "network_dim": _number(int, 1, 256),
    "network_alpha": _number(float, 0.1, 256),
    "learning_rate": _number(float, 1e-7, 1e-2),
    "unet_lr": _number(float, 1e-7, 1e-2),
    "text_encoder_lr": _number(float, 0, 1e-2),
    "resolution": _resolution,
    "seed": _number(int, 0, 2**31 - 1),
    "suggested_weight": _number(float, 0.1, 2.0),
}


def parse_overrides(text: str) -> dict[str, Any]:
    """``"max_train_epochs=8 network_dim=16"`` (spaces or commas) → checked values."""
    values: dict[str, Any] = {}
    for token in text.replace(";", " ").split():
        key, sep, raw = token.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not raw:
            raise BotError(f"`{token}`: write overrides as key=value, e.g. max_train_epochs=8.")
        parser = OVERRIDES.get(key)
        if parser is None:
            raise BotError(
                f"`{key}` is not a setting /train config knows. Known: "
                + ", ".join(sorted(OVERRIDES))
                + "."
            )
        try:
            values[key] = parser(raw.strip().rstrip(","))
        except ValueError as error:
            raise BotError(f"`{key}={raw}`: {error}.") from None
    return values


def build_config(family: str, preset: str, overrides: str) -> dict[str, Any]:
    names = preset_names(family)
    if preset not in names:
        raise BotError(
            f"Unknown preset `{preset}` for {family}. Choose one of: " + ", ".join(names) + "."
        )
    return {"preset": preset, **parse_overrides(overrides)}

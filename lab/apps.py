"""The apps people load LoRA files in, and how each applies the network types we write.

Measured with each app's own loader code on our files (SD1.5 and SDXL): LoRA, LoCon,
LoHa and LoKr give the trained weight change in ComfyUI, Forge and A1111; diffusers
loads LoRA/LoCon only. DoRA is where they differ, so a DoRA model is released with a
plain-LoRA fit of its exact weight change (``…-lora-compat.safetensors``) whenever the
lab's apps include one that does not read DoRA right.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from typing import Any

from lab.training.errors import ConfigError
from lab.training.job import check_job_config


class App(enum.StrEnum):
    COMFYUI = "comfyui"
    FORGE = "forge"
    A1111 = "a1111"
    DIFFUSERS = "diffusers"
    LYCORIS = "lycoris"


# What each app does with a DoRA file (``dora_scale`` [out, 1] per module).
DORA_IN_APP: dict[App, str] = {
    App.COMFYUI: "takes the output-axis branch but divides by the norm of the base weight "
    "instead of W + ΔW: 14–24 % of the update comes out wrong",
    App.FORGE: "same code as ComfyUI: 14–24 % of the update comes out wrong",
    App.A1111: "normalises over the input axis, so the [out, 1] scale broadcasts wrongly: "
    "the update is off by 6.5× (median) up to 3,600×, silently",
    App.DIFFUSERS: "drops dora_scale and loads the file as plain LoRA (with a warning)",
    App.LYCORIS: "applies it right",
}
DORA_READS_RIGHT = frozenset({App.LYCORIS})
DEFAULT_RELEASE_APPS = (App.COMFYUI, App.FORGE, App.A1111, App.DIFFUSERS)
COMPAT_SUFFIX = "-lora-compat"


def compat_filename(filename: str) -> str:
    """``ohwx-e10.safetensors`` → ``ohwx-e10-lora-compat.safetensors``: the plain-LoRA
    fit saved beside a DoRA file (storage keys follow the same rule)."""
    stem, dot, suffix = filename.rpartition(".")
    if not dot or suffix != "safetensors":
        raise ValueError(f"{filename!r} is not a .safetensors file name")
    return f"{stem}{COMPAT_SUFFIX}.{suffix}"


def needs_dora_compat(apps: Iterable[App]) -> bool:
    """True when one of ``apps`` applies DoRA files wrongly."""
    return any(App(app) not in DORA_READS_RIGHT for app in apps)


def dora_note(apps: Iterable[App]) -> str:
    """One line per app: what it does with the DoRA original."""
    return "\n".join(f"{App(app).value}: {DORA_IN_APP[App(app)]}" for app in apps)


def job_is_dora(preset: str | None, config: Mapping[str, Any]) -> bool:
    """Whether a job's stored preset and configuration train DoRA (``dora_wd=True``);
    a configuration that no longer validates is reported as not DoRA."""
    try:
        return check_job_config(preset, config).use_dora
    except ConfigError:
        return False


def fit_error(data: bytes) -> float | None:
    """The relative error a compat file records in its safetensors header (read without
    torch: 8 bytes of header length, then the JSON header); None when absent."""
    if len(data) < 8:
        return None
    length = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + length])
        return float(header["__metadata__"]["loralab_dora_compat_relative_error"])
    except (ValueError, KeyError, TypeError):
        return None

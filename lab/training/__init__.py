"""The training configuration: one versioned pydantic model with kohya's option names,
the presets, and the key checks. Pure, so the bot validates `/train config` with the
same model the trainer runs on (the bot never imports the trainer)."""

from lab.training.config import TrainConfig, build_config, load_config
from lab.training.errors import ConfigError
from lab.training.presets import PRESETS, preset_values

__all__ = ["PRESETS", "ConfigError", "TrainConfig", "build_config", "load_config", "preset_values"]

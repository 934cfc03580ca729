"""The training configuration's error."""

from __future__ import annotations

from lab.errors import LabError


class ConfigError(LabError):
    """The training config is invalid: an unknown key, a bad value, a missing path."""

    code = "trainer_config"

"""IngestSettings: defaults from the families, validation, and the CommonSettings hook."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lab.dataset.settings import IngestSettings
from lab.families import FAMILIES, BaseFamily


def test_min_side_follows_the_families_with_an_absolute_floor():
    settings = IngestSettings()
    for family, defaults in FAMILIES.items():
        assert settings.min_side_for(family) == defaults.min_side
    assert settings.min_side_for(None) == settings.absolute_min_side
    tiny = IngestSettings(min_side={BaseFamily.SD15: 10})
    assert tiny.min_side_for(BaseFamily.SD15) == tiny.absolute_min_side


@pytest.mark.parametrize(
    "bad",
    [{"background": (0, 0, 256)}, {"too_small": "ignore"}, {"animated": "all"}, {"typo": 1}],
)
def test_invalid_values_and_unknown_keys_are_refused(bad):
    with pytest.raises(ValidationError):
        IngestSettings(**bad)


def test_cli_settings_read_ingest_from_the_environment(monkeypatch, tmp_path):
    from lab.settings import CliSettings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORALAB_INGEST__MAX_SIDE", "2048")
    monkeypatch.setenv("LORALAB_INGEST__TOO_SMALL", "warn")
    settings = CliSettings().ingest
    assert (settings.max_side, settings.too_small) == (2048, "warn")

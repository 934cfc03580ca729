"""`bot/exts/jobs/_logic.py` as pure functions: `/train config` overrides, no Discord."""

from __future__ import annotations

import pytest

from bot.errors import BotError
from bot.exts.jobs._logic import build_config, parse_overrides, parse_value


@pytest.mark.parametrize(
    ("raw", "value"),
    [("8", 8), ("1e-4", 1e-4), ("0.5", 0.5), ("true", True), ("False", False), ("adamw", "adamw")],
)
def test_values_are_read_as_numbers_booleans_or_text(raw, value):
    assert parse_value(raw) == value
    assert type(parse_value(raw)) is type(value)


def test_overrides_split_on_spaces_commas_and_semicolons():
    parsed = parse_overrides("max_train_epochs=8, network-dim=16;learning_rate=1e-4")
    assert parsed == {"max_train_epochs": 8, "network_dim": 16, "learning_rate": 1e-4}


@pytest.mark.parametrize("token", ["max_train_epochs", "=8", "network_dim="])
def test_an_override_without_key_or_value_is_refused_by_name(token):
    with pytest.raises(BotError, match=f"`{token}`: write overrides as key=value"):
        parse_overrides(f"network_alpha=8 {token}")


def test_a_valid_config_names_its_preset():
    preset, config = build_config("sd15", "character", "max_train_epochs=8")
    assert preset == "sd15-character"
    assert config == {"preset": "sd15-character", "max_train_epochs": 8}


def test_an_unknown_preset_lists_the_ones_there_are():
    with pytest.raises(
        BotError, match=r"no `sd15-portrait` preset yet\. Presets: .*sd15-character"
    ):
        build_config("sd15", "portrait", "")


def test_a_key_the_trainer_does_not_know_is_refused_with_the_trainers_reason():
    with pytest.raises(BotError, match=r"That training configuration is not valid: .*no_such_key"):
        build_config("sd15", "character", "no_such_key=1")

"""The config: kohya keys, helpful errors for unknown ones, presets and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.training.config import (
    CONFIG_VERSION,
    TrainConfig,
    build_config,
    load_config,
    parse_override,
)
from lab.training.errors import ConfigError
from lab.training.presets import PRESETS

MINIMAL = {
    "pretrained_model_name_or_path": "/models/sd15",
    "train_data_dir": "/data",
    "output_dir": "/out",
    "max_train_epochs": 1,
}


def test_kohya_sectioned_file_is_flattened(tmp_path: Path) -> None:
    path = tmp_path / "kohya.toml"
    path.write_text(
        """
[model_arguments]
pretrained_model_name_or_path = "/models/sd15"
v_parameterization = false

[dataset_arguments]
train_data_dir = "/data"
resolution = "768,512"
enable_bucket = true
bucket_reso_steps = 64
shuffle_caption = true
keep_tokens = 1

[training_arguments]
output_dir = "/out"
output_name = "mylora"
max_train_epochs = 10
learning_rate = 1e-4
optimizer_type = "AdamW"
optimizer_args = ["weight_decay=0.1", "betas=0.9,0.99"]
mixed_precision = "bf16"
xformers = true

[network_arguments]
network_module = "networks.lora"
network_dim = 16
network_alpha = 8
"""
    )
    config = load_config(path)
    assert config.resolution == (768, 512)
    assert config.network_dim == 16 and config.network_alpha == 8.0
    assert config.optimizer_kwargs() == {"weight_decay": 0.1, "betas": (0.9, 0.99)}
    assert config.config_version == CONFIG_VERSION


def test_unknown_key_is_an_error_that_names_it() -> None:
    with pytest.raises(ConfigError, match="unknown key 'learning_rte': use learning_rate instead"):
        build_config({**MINIMAL, "learning_rte": 1e-4})
    with pytest.raises(ConfigError, match="'wibble'"):
        build_config({**MINIMAL, "wibble": 1})


def test_known_foreign_keys_say_what_to_use_instead() -> None:
    with pytest.raises(ConfigError, match="'epochs': use max_train_epochs instead"):
        build_config({**MINIMAL, "epochs": 3})
    with pytest.raises(ConfigError, match=r"color_aug = True is not supported: colour"):
        build_config({**MINIMAL, "color_aug": True})


def test_unknown_key_in_a_subset_is_an_error() -> None:
    values = {
        **{k: v for k, v in MINIMAL.items() if k != "train_data_dir"},
        "datasets": [{"subsets": [{"image_dir": "/d", "num_repeat": 3}]}],
    }
    with pytest.raises(ConfigError, match="num_repeat"):
        build_config(values)


def test_dataset_section_subsets() -> None:
    values = {
        **{k: v for k, v in MINIMAL.items() if k != "train_data_dir"},
        "datasets": [
            {
                "subsets": [
                    {"image_dir": "/d/a", "num_repeats": 3, "keep_tokens": 2},
                    {"image_dir": "/d/reg", "is_reg": True},
                ]
            }
        ],
    }
    config = build_config(values)
    subsets = config.datasets[0].subsets
    assert subsets[0].num_repeats == 3 and subsets[0].keep_tokens == 2
    assert subsets[1].is_reg


def test_bad_values_are_reported_by_key() -> None:
    with pytest.raises(ConfigError, match="network_dim"):
        build_config({**MINIMAL, "network_dim": 0})
    with pytest.raises(ConfigError, match="max_train_steps"):
        build_config({**MINIMAL, "max_train_steps": 0})


def test_config_is_frozen() -> None:
    config = build_config(MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        config.network_dim = 8  # type: ignore[misc]


def test_preset_then_file_then_overrides() -> None:
    preset = PRESETS["sd15-character"]
    config = build_config(
        {**MINIMAL, "network_dim": 8},
        preset="sd15-character",
        overrides=dict([parse_override("learning_rate=5e-5"), parse_override("output_name=x y")]),
    )
    assert config.min_snr_gamma == preset["min_snr_gamma"]  # from the preset
    assert config.keep_tokens == 1 and config.flip_aug is False
    assert config.network_dim == 8  # the file beats the preset
    assert config.learning_rate == 5e-5  # the CLI beats both
    assert config.output_name == "x y"


def test_every_preset_builds_a_valid_config() -> None:
    for name in PRESETS:
        assert isinstance(build_config(MINIMAL, preset=name), TrainConfig)
    with pytest.raises(ConfigError, match="known presets"):
        build_config(MINIMAL, preset="sd99-anything")


def test_override_values_parse_as_toml() -> None:
    assert parse_override("network_dim=16") == ("network_dim", 16)
    assert parse_override("flip_aug=true") == ("flip_aug", True)
    assert parse_override("optimizer_args=['a=1']") == ("optimizer_args", ["a=1"])
    with pytest.raises(ConfigError):
        parse_override("no_equals_sign")


def test_network_args_locon_and_unsupported() -> None:
    config = build_config({**MINIMAL, "network_args": ["conv_dim=8"]})
    assert (config.conv_dim, config.conv_alpha) == (8, 1.0)  # kohya's default conv_alpha
    with pytest.raises(ConfigError, match=r"algo=loha needs network_module = 'lycoris.kohya'"):
        build_config({**MINIMAL, "network_args": ["algo=loha"]})
    with pytest.raises(ConfigError, match="conv_alpha needs conv_dim"):
        build_config({**MINIMAL, "network_args": ["conv_alpha=1"]})


@pytest.mark.parametrize(
    ("module", "args", "kind", "dora"),
    [
        ("networks.lora", [], "lora", False),
        ("networks.lora", ["conv_dim=4"], "lora", False),
        ("lycoris.kohya", ["algo=locon", "conv_dim=4", "dora_wd=True"], "lora", True),
        ("lycoris.kohya", ["algo=loha"], "loha", False),
        ("lycoris.kohya", ["algo=lokr", "factor=8"], "lokr", False),
    ],
)
def test_kohya_and_lycoris_network_spellings_map(
    module: str, args: list[str], kind: str, dora: bool
) -> None:
    config = build_config({**MINIMAL, "network_module": module, "network_args": args})
    assert (config.network_type, config.use_dora) == (kind, dora)


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("networks.dylora", [], r"'networks.dylora' \(DyLoRA\) is not supported"),
        ("networks.made_up", [], r"'networks.made_up' is not supported"),
        ("lycoris.kohya", ["algo=ia3"], r"algo=ia3 \(\(IA\)\^3\) is not supported"),
        ("lycoris.kohya", ["algo=glora"], r"algo=glora \(GLoRA\)"),
        ("lycoris.kohya", ["algo=loha", "conv_dim=8", "use_tucker=True"], r"use_tucker \(Tucker"),
        ("lycoris.kohya", ["algo=loha", "dora_wd=True"], "dora_wd=True works with algo=lora"),
        ("networks.lora", ["factor=4"], "factor is a LoKr option"),
        ("networks.lora", ["rank_dropout=0.1"], "rank_dropout is not supported for LoRA/LoCon"),
        ("networks.lora", ["wibble=1"], r"\['wibble'\] are not supported"),
    ],
)
def test_unsupported_network_spellings_are_named(
    module: str, args: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({**MINIMAL, "network_module": module, "network_args": args})


def test_network_dropout_is_a_lora_option() -> None:
    values = {**MINIMAL, "network_module": "lycoris.kohya", "network_args": ["algo=loha"]}
    with pytest.raises(ConfigError, match="network_dropout is a LoRA option"):
        build_config({**values, "network_dropout": 0.1})


def test_optimizer_names_are_case_insensitive_as_in_kohya() -> None:
    assert build_config({**MINIMAL, "optimizer_type": "prodigy"}).optimizer_type == "Prodigy"
    assert build_config({**MINIMAL, "optimizer_type": "ADAMW8BIT"}).optimizer_type == "AdamW8bit"
    with pytest.raises(ConfigError, match="optimizer_type"):
        build_config({**MINIMAL, "optimizer_type": "SGDNesterov"})

"""A kohya user's config means here what it means in kohya (sd-scripts' keys and
defaults, the kohya_ss GUI's TOML shape). The two configs under ``kohya/`` are written
for these tests in the shape the GUI writes; no kohya file is copied."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.training.config import build_config, build_config_with_sources, load_config
from lab.training.errors import ConfigError
from lab.training.keys import RENAMED_KEYS, UNSUPPORTED_KEYS
from lab.training.kohya import NO_EFFECT_KEYS, OFF_ONLY_KEYS, source_lines

HERE = Path(__file__).parent / "kohya"
MINIMAL = {"pretrained_model_name_or_path": "/m", "train_data_dir": "/d", "output_dir": "/o"}

# sd-scripts' option names, one a line.
SD_SCRIPTS_KEYS = [
    line
    for line in (HERE / "sd_scripts_keys.txt").read_text("utf-8").splitlines()
    if line and not line.startswith("#")
]


def test_a_gui_lora_config_loads_unchanged_and_means_what_it_says() -> None:
    config = load_config(HERE / "sd15_lora_gui.toml")
    assert config.max_train_epochs is None and config.max_train_steps == 1600  # steps set
    assert config.text_encoder_lrs == (5e-5, 5e-5)
    assert config.loss_type == "l2" and config.huber_schedule == "snr"
    assert config.max_timestep == 1000
    assert config.noise_offset == 0.0357 and config.multires_noise_iterations is None
    assert config.scale_weight_norms == 1.0
    assert config.network_dropout is None  # 0 is kohya's "off"
    assert config.resume is None  # resume = false


def test_a_gui_lycoris_config_loads_unchanged() -> None:
    config = load_config(HERE / "sdxl_lokr_gui.toml")
    assert config.network_type == "lokr"
    assert config.max_train_epochs == 20  # `epoch`, as no other length is set
    assert config.loss_type == "smooth_l1" and config.huber_schedule == "exponential"
    assert (config.min_timestep, config.max_timestep) == (100, 900)
    # noise_offset_type = "Multires": the GUI's offset keys are not used.
    assert config.multires_noise_iterations == 8 and config.noise_offset is None
    assert config.adaptive_noise_scale is None
    assert config.network_arg_values == {
        "conv_dim": 16,
        "conv_alpha": 1,
        "factor": -1,
        "algo": "lokr",
    }


def test_every_sd_scripts_key_is_classified_so_no_hint_points_elsewhere() -> None:
    handled = (
        set(type(build_config(MINIMAL)).model_fields)
        | set(NO_EFFECT_KEYS)
        | set(OFF_ONLY_KEYS)
        | set(RENAMED_KEYS)
        | set(UNSUPPORTED_KEYS)
        | {"save_model_as", "epoch", "noise_offset_type", "config_file"}
    )
    unclassified = sorted(set(SD_SCRIPTS_KEYS) - handled)
    assert unclassified == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("color_aug", False),
        ("random_crop", False),
        ("full_fp16", False),
        ("max_token_length", 75),
        ("max_token_length", "75"),
        ("resume", False),
        ("vae_batch_size", 0),
        ("save_every_n_steps", 0),
        ("caption_dropout_every_n_epochs", 0),
        ("lr_scheduler_type", ""),
        ("network_weights", ""),
        ("dynamo_backend", "no"),
        ("wandb_run_name", "run"),
        ("no_half_vae", True),
        ("sdxl", True),
    ],
)
def test_a_key_at_its_off_value_is_accepted(key: str, value: object) -> None:
    build_config({**MINIMAL, key: value})


@pytest.mark.parametrize(
    "arg",
    [
        "use_tucker=False",
        "use_cp=False",
        "use_scalar=False",
        "train_norm=False",
        "decompose_both=False",
        "bypass_mode=False",
        "preset=full",
        "rank_dropout=0",
        "module_dropout=0",
        "dora_wd=False",
    ],
)
def test_lycoris_network_args_at_their_off_value_are_accepted(arg: str) -> None:
    args = ["algo=lokr", arg]
    build_config({**MINIMAL, "network_module": "lycoris.kohya", "network_args": args})


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("color_aug", True, "colour augmentation"),
        ("max_token_length", 300, "max_token_length"),
        ("full_fp16", True, "mixed_precision = 'fp16'"),
        ("lr_scheduler_type", "MySchedule", "torch.optim.lr_scheduler class"),
        ("token_warmup_step", 5, "token warm-up"),
        ("ip_noise_gamma", 0.1, "use noise_offset"),
    ],
)
def test_a_key_that_asks_for_what_we_do_not_do_is_refused_with_the_right_reason(
    key: str, value: object, reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        build_config({**MINIMAL, key: value})
    assert "lr_scheduler_power" not in str(caught.value)
    assert "lr_warmup_steps" not in str(caught.value)


def test_full_bf16_is_accepted_with_bf16_mixed_precision() -> None:
    build_config({**MINIMAL, "full_bf16": True, "mixed_precision": "bf16"})


def test_hints_only_for_misspellings() -> None:
    with pytest.raises(ConfigError, match="use learning_rate instead"):
        build_config({**MINIMAL, "learning_rte": 1e-4})
    with pytest.raises(ConfigError) as caught:
        build_config({**MINIMAL, "noise_offset_type": "Pyramid"})
    assert "'Original' (noise_offset) or 'Multires'" in str(caught.value)


def test_text_encoder_lr_list_gives_one_rate_per_encoder() -> None:
    config = build_config({**MINIMAL, "text_encoder_lr": [5e-5, 1e-5]})
    assert config.text_encoder_lrs == (5e-5, 1e-5)
    assert build_config({**MINIMAL, "text_encoder_lr": [3e-5]}).text_encoder_lrs == (3e-5, 3e-5)
    assert not build_config({**MINIMAL, "text_encoder_lr": [0, 0]}).train_text_encoder
    with pytest.raises(ConfigError, match="text_encoder_lr"):
        build_config({**MINIMAL, "text_encoder_lr": [-1]})


def test_missing_keys_mean_kohyas_defaults() -> None:
    config = build_config(MINIMAL)
    assert config.network_alpha == 1.0 and config.network_dim == 4
    assert config.caption_extension == ".caption"
    assert config.enable_bucket is False
    assert config.learning_rate == 2e-6
    assert config.max_train_steps == 1600 and config.max_train_epochs is None
    assert (config.loss_type, config.huber_c, config.huber_scale) == ("l2", 0.1, 1.0)
    assert config.lr_scheduler == "constant" and config.train_batch_size == 1


def test_the_first_lines_say_where_each_value_came_from() -> None:
    _, sources = build_config_with_sources(
        {**MINIMAL, "network_dim": 8},
        preset="sd15-character",
        overrides={"learning_rate": 5e-5},
    )
    assert sources["network_dim"] == "config file"
    assert sources["min_snr_gamma"] == "preset sd15-character"
    assert sources["learning_rate"] == "command line"
    bare, bare_sources = build_config_with_sources(MINIMAL)
    lines = source_lines(bare.model_dump(), bare_sources)
    assert lines[-1].startswith("kohya defaults (not set): network_dim=4, network_alpha=1.0")
    assert "caption_extension=.caption" in lines[-1] and "enable_bucket=False" in lines[-1]


def test_loss_and_timestep_values_are_checked() -> None:
    with pytest.raises(ConfigError, match="min_timestep"):
        build_config({**MINIMAL, "min_timestep": 900, "max_timestep": 100})
    with pytest.raises(ConfigError, match="adaptive_noise_scale needs noise_offset"):
        build_config({**MINIMAL, "adaptive_noise_scale": 0.01})
    with pytest.raises(ConfigError, match="loss_type"):
        build_config({**MINIMAL, "loss_type": "l3"})


def test_lora_rank_and_module_dropout_name_the_alternative() -> None:
    with pytest.raises(ConfigError, match=r"use network_dropout .* or algo=loha"):
        build_config({**MINIMAL, "network_args": ["conv_dim=4", "rank_dropout=0.1"]})


def test_adafactor_schedule_needs_adafactor() -> None:
    build_config({**MINIMAL, "optimizer_type": "Adafactor", "lr_scheduler": "adafactor"})
    with pytest.raises(ConfigError, match="optimizer_type = 'Adafactor'"):
        build_config({**MINIMAL, "lr_scheduler": "adafactor"})


def test_a_flux_key_is_named_as_such_not_hinted() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({**MINIMAL, "t5xxl_max_token_length": 512})
    assert "FLUX/SD3" in str(caught.value) and "use max_token_length" not in str(caught.value)


def test_options_of_an_option_that_is_off_are_accepted() -> None:
    build_config({**MINIMAL, "save_last_n_steps_state": 1, "save_every_n_steps": 0})
    build_config({**MINIMAL, "save_last_n_epochs_state": 2})
    with pytest.raises(ConfigError, match="save_last_n_epochs_state"):
        build_config({**MINIMAL, "save_last_n_epochs_state": 2, "save_state": True})


def test_args_in_kohyas_command_line_form() -> None:
    config = build_config({**MINIMAL, "optimizer_args": '"weight_decay=0.1" "betas=0.9,0.99"'})
    assert config.optimizer_kwargs() == {"weight_decay": 0.1, "betas": (0.9, 0.99)}


def test_bucket_steps_below_8_are_rounded_up() -> None:
    assert build_config({**MINIMAL, "bucket_reso_steps": 1}).bucket_reso_steps == 8
    assert build_config({**MINIMAL, "bucket_reso_steps": 64.0}).bucket_reso_steps == 64


def test_lycoris_options_of_an_option_that_is_off_are_accepted() -> None:
    lycoris = {**MINIMAL, "network_module": "lycoris.kohya"}
    build_config({**lycoris, "network_args": ["algo=lokr", "rank_dropout_scale=True"]})
    build_config({**lycoris, "network_args": ["algo=loha", "use_tucker=True"]})
    with pytest.raises(ConfigError, match="use_tucker"):
        build_config({**lycoris, "network_args": ["algo=loha", "conv_dim=8", "use_tucker=True"]})

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

# sd-scripts' train_network.py / sdxl_train_network.py options (from the argument
# definitions in library/train_util.py and train_network.py), by name.
SD_SCRIPTS_KEYS = ["adaptive_noise_scale", "alpha_mask", "async_upload", "base_weights", "base_weights_multiplier", "blocks_to_swap", "bucket_no_upscale", "bucket_reso_steps", "cache_info", "cache_latents", "cache_latents_to_disk", "cache_text_encoder_outputs", "caption_dropout_every_n_epochs", "caption_dropout_rate", "caption_extension", "caption_extention", "caption_prefix", "caption_separator", "caption_suffix", "caption_tag_dropout_rate", "clip_skip", "color_aug", "conditioning_data_dir", "cpu_offload_checkpointing", "dataset_class", "dataset_config", "dataset_repeats", "ddp_gradient_as_bucket_view", "ddp_static_graph", "ddp_timeout", "debiased_estimation_loss", "debug_dataset", "deepspeed", "dim_from_weights", "disable_mmap_load_safetensors", "dynamo_backend", "enable_bucket", "enable_wildcard", "face_crop_aug_range", "flip_aug", "fp8_base", "fp8_base_unet", "full_bf16", "full_fp16", "fused_backward_pass", "gradient_accumulation_steps", "gradient_checkpointing", "highvram", "huber_c", "huber_scale", "huber_schedule", "huggingface_path_in_repo", "huggingface_repo_id", "huggingface_repo_type", "huggingface_repo_visibility", "huggingface_token", "in_json", "initial_epoch", "initial_step", "ip_noise_gamma", "ip_noise_gamma_random_strength", "keep_tokens", "keep_tokens_separator", "learning_rate", "log_config", "log_prefix", "log_tracker_config", "log_tracker_name", "log_with", "logging_dir", "logit_mean", "logit_std", "loss_type", "lowram", "lr_decay_steps", "lr_scheduler", "lr_scheduler_args", "lr_scheduler_min_lr_ratio", "lr_scheduler_num_cycles", "lr_scheduler_power", "lr_scheduler_timescale", "lr_scheduler_type", "lr_warmup_steps", "masked_loss", "max_bucket_reso", "max_data_loader_n_workers", "max_grad_norm", "max_timestep", "max_token_length", "max_train_epochs", "max_train_steps", "max_validation_steps", "mem_eff_attn", "min_bucket_reso", "min_snr_gamma", "min_timestep", "mixed_precision", "mode_scale", "multires_noise_discount", "multires_noise_iterations", "network_alpha", "network_args", "network_dim", "network_dropout", "network_module", "network_train_text_encoder_only", "network_train_unet_only", "network_weights", "no_half_vae", "no_metadata", "noise_offset", "noise_offset_random_strength", "optimizer_args", "optimizer_type", "output_dir", "output_name", "persistent_data_loader_workers", "pretrained_model_name_or_path", "prior_loss_weight", "random_crop", "reg_data_dir", "resize_interpolation", "resolution", "resume", "resume_from_huggingface", "sample_at_first", "sample_every_n_epochs", "sample_every_n_steps", "sample_prompts", "sample_sampler", "save_every_n_epochs", "save_every_n_steps", "save_last_n_epochs", "save_last_n_epochs_state", "save_last_n_steps", "save_last_n_steps_state", "save_model_as", "save_n_epoch_ratio", "save_precision", "save_state", "save_state_on_train_end", "save_state_to_huggingface", "scale_v_pred_loss_like_noise_pred", "scale_weight_norms", "sdpa", "secondary_separator", "seed", "shuffle_caption", "skip_cache_check", "skip_until_initial_step", "text_encoder_batch_size", "text_encoder_lr", "token_warmup_min", "token_warmup_step", "tokenizer_cache_dir", "torch_compile", "train_batch_size", "train_data_dir", "training_comment", "unet_lr", "use_8bit_adam", "use_lion_optimizer", "use_safetensors", "v2", "v_parameterization", "v_pred_like_loss", "vae", "vae_batch_size", "validate_every_n_epochs", "validate_every_n_steps", "validation_seed", "validation_split", "wandb_api_key", "wandb_run_name", "weighted_captions", "weighting_scheme", "xformers", "zero_stage", "zero_terminal_snr"]


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
        set(build_config(MINIMAL).model_fields)
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
        ("max_token_length", 225, "75-token"),
        ("full_fp16", True, "mixed_precision = 'fp16'"),
        ("lr_scheduler_type", "CosineAnnealingLR", "use lr_scheduler"),
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
    config, sources = build_config_with_sources(
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
    with pytest.raises(ConfigError, match="use network_dropout .* or algo=loha"):
        build_config({**MINIMAL, "network_args": ["conv_dim=4", "rank_dropout=0.1"]})


def test_adafactor_schedule_needs_adafactor() -> None:
    build_config({**MINIMAL, "optimizer_type": "Adafactor", "lr_scheduler": "adafactor"})
    with pytest.raises(ConfigError, match="optimizer_type = 'Adafactor'"):
        build_config({**MINIMAL, "lr_scheduler": "adafactor"})

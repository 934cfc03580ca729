"""Base-model loading: pickles refused without opt-in, nothing fetched from the hub."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from trainer.errors import ConfigError, UnsafeCheckpointError
from trainer.models import load_base_model


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_checkpoint_is_refused_without_the_flag(tmp_path: Path, suffix: str) -> None:
    checkpoint = tmp_path / f"model{suffix}"
    torch.save({"state_dict": {}}, checkpoint)
    config = build_config(base_values(checkpoint, tmp_path / "data", tmp_path / "out"))
    with pytest.raises(UnsafeCheckpointError, match="allow-unsafe-checkpoint"):
        load_base_model(config)


def test_the_cli_flag_opts_in(tmp_path: Path, tiny_model: Path) -> None:
    """With the flag the pickle goes to from_single_file (which cannot read this empty
    file): the error is about the content, no longer the refusal."""
    from click.testing import CliRunner

    from loralab.cli import main
    from trainer.tiny import build_dataset, write_toml

    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}}, checkpoint)
    data = build_dataset(tmp_path / "data")
    values = base_values(checkpoint, data, tmp_path / "out", single_file_config=str(tiny_model))
    config = write_toml(tmp_path / "t.toml", values)
    refused = CliRunner().invoke(main, ["train", str(config), "--quiet"])
    assert refused.exit_code != 0 and "pickle checkpoint" in refused.output
    allowed = CliRunner().invoke(
        main, ["train", str(config), "--quiet", "--allow-unsafe-checkpoint"]
    )
    assert allowed.exit_code != 0
    assert "pickle checkpoint" not in allowed.output


def test_a_missing_local_path_is_not_sent_to_the_hub(tmp_path: Path) -> None:
    config = build_config(base_values(tmp_path / "nowhere" / "model", tmp_path, tmp_path / "o"))
    with pytest.raises(ConfigError, match="neither a diffusers folder"):
        load_base_model(config)


def test_diffusers_folder_loads_offline(tiny_model: Path, tmp_path: Path) -> None:
    base = load_base_model(build_config(base_values(tiny_model, tmp_path, tmp_path / "o")))
    assert base.prediction_type == "epsilon"
    assert base.vae_scale_factor == 8
    assert not any(p.requires_grad for p in base.unet.parameters())
    vpred = load_base_model(
        build_config(base_values(tiny_model, tmp_path, tmp_path / "o", v_parameterization=True))
    )
    assert vpred.prediction_type == "v_prediction"


def test_single_file_checkpoint_loads_offline_with_local_configs(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    from safetensors import safe_open

    from tests.trainer.ldm import save_single_file
    from trainer.loop import train

    checkpoint = save_single_file(tiny_model, tmp_path / "tiny-sd15.safetensors")
    values = base_values(
        checkpoint,
        dataset,
        tmp_path / "out",
        max_train_epochs=1,
        single_file_config=str(tiny_model),
    )
    base = load_base_model(build_config(values))
    reference = load_base_model(build_config(base_values(tiny_model, dataset, tmp_path / "o")))
    for name in ("unet", "vae", "text_encoder"):
        loaded = getattr(base, name).state_dict()
        expected = getattr(reference, name).state_dict()
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected), name

    result = train(build_config(values))
    meta = safe_open(str(result.final_path), "pt").metadata()
    assert meta["ss_sd_model_name"] == "tiny-sd15.safetensors"


def test_single_file_without_local_configs_fails_with_guidance(
    tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    from tests.trainer.ldm import save_single_file

    checkpoint = save_single_file(tiny_model, tmp_path / "tiny.safetensors")
    config = build_config(base_values(checkpoint, dataset, tmp_path / "out"))
    # No single_file_config and no local HF cache: refused offline, never downloaded.
    with pytest.raises(ConfigError, match="single_file_config"):
        load_base_model(config)

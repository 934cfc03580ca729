"""A tiny SD1.5-shaped model and dataset, built once per test session, offline."""

from __future__ import annotations

import os

# Before diffusers/transformers are imported anywhere: any hub access is a test failure.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from pathlib import Path

import pytest

from trainer.tiny import build_dataset, build_tiny_sd15, build_tiny_sdxl

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd15(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def tiny_vpred_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd15(tmp_path_factory.mktemp("vmodel"), prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_sdxl_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sdxl(tmp_path_factory.mktemp("xlmodel"))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A fresh copy per test, so tests may touch or add images."""
    return build_dataset(tmp_path / "data")


def base_values(model: Path, data: Path, output: Path, **extra: object) -> dict[str, object]:
    """Config values for a fast run on the tiny model: 64 px, two buckets, rank 4."""
    values: dict[str, object] = {
        "pretrained_model_name_or_path": str(model),
        "train_data_dir": str(data),
        "output_dir": str(output),
        "output_name": "tiny",
        "resolution": "64,64",
        "enable_bucket": True,
        "caption_extension": ".txt",
        "min_bucket_reso": 32,
        "max_bucket_reso": 128,
        "bucket_reso_steps": 32,
        "network_dim": 4,
        "network_alpha": 2.0,
        "train_batch_size": 2,
        "max_train_epochs": 2,
        "learning_rate": 1e-3,
        "seed": 1234,
        "save_precision": "float",
    }
    values.update(extra)
    return values


def random_network(model: Path, data: Path, output: Path, args: list[str], **extra: object):
    """The base and a freshly injected network (``network_args`` = ``args``) whose adapter
    weights are random, so it changes every wrapped layer without a training run."""
    import torch

    from lab.training.config import build_config
    from trainer.models import load_base_model
    from trainer.network import apply_lora, is_adapter_parameter

    module = "lycoris.kohya" if any(a.startswith(("algo=", "dora_wd")) for a in args) else None
    values = base_values(model, data, output, network_args=args, **extra)
    if module:
        values["network_module"] = module
    config = build_config(values)
    base = load_base_model(config)
    network = apply_lora(base.unet, base.text_encoder, config, base.text_encoder_2)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for part in network.components().values():
            for name, parameter in part.named_parameters():
                if not is_adapter_parameter(name):
                    continue
                noise = torch.randn(parameter.shape, generator=generator)
                if "magnitude" in name:  # DoRA: a trained magnitude, near the base norm
                    parameter.mul_(1 + 0.1 * noise)
                else:
                    parameter.copy_(noise * 0.3 / max(parameter.shape[-1], 1) ** 0.5)
    return base, network

"""The plain-LoRA fit of a DoRA network: it is the best rank-r approximation of the exact
DoRA weight change, its recorded error is the error a plain-LoRA reader gets, and at
full rank it reproduces the DoRA network."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lab.training.config import build_config
from tests.trainer.conftest import base_values, random_network
from tests.trainer.readers import merge_file
from trainer.compat import dora_weight_changes, fit_low_rank, save_dora_compat
from trainer.formats import file_naming, kohya_module_name, kohya_state_dict
from trainer.loop import train

DORA_LOCON = ["algo=locon", "conv_dim=2", "conv_alpha=1", "dora_wd=True"]


def _dora_file(network, naming: dict, path: Path) -> Path:
    tensors = kohya_state_dict(network.state_dicts(), network.alphas, network.ranks, **naming)
    meta = {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps(
        {"algo": "locon", "conv_dim": "2", "conv_alpha": "1", "dora_wd": "True"})}  # fmt: skip
    save_file(tensors, str(path), metadata=meta)
    return path


def _merged_changes(model_dir: Path, tensors: dict, naming: dict) -> dict[str, torch.Tensor]:
    """ΔW per UNet/text-encoder module when a plain-LoRA reader merges ``tensors``."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    changes = {}
    for component, cls in (("unet", UNet2DConditionModel), ("text_encoder", CLIPTextModel)):
        fresh = cls.from_pretrained(model_dir / component, local_files_only=True)
        before = {n: m.weight.detach().clone() for n, m in fresh.named_modules()
                  if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}  # fmt: skip
        merge_file(fresh, tensors, lambda n, c=component: kohya_module_name(c, n, **naming))
        for name, module in fresh.named_modules():
            if name in before:
                changes[f"{component}:{name}"] = module.weight.detach() - before[name]
    return changes


def test_fit_is_the_truncated_svd() -> None:
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 5, 3, 3, generator=generator)
    down, up, residual = fit_low_rank(delta, 2)
    assert down.shape == (2, 5, 3, 3) and up.shape == (6, 2, 1, 1)
    approx = (up.flatten(1) @ down.flatten(1)).reshape(delta.shape)
    s = torch.linalg.svdvals(delta.flatten(1).double())
    # Eckart–Young: the residual is the energy of the dropped singular values.
    assert math.isclose(residual, float((s[2:] ** 2).sum()), rel_tol=1e-5)
    assert math.isclose(float((delta - approx).double().pow(2).sum()), residual, rel_tol=1e-5)


@pytest.mark.parametrize("rank", [None, 64], ids=["same-rank", "full-rank"])
def test_compat_file_matches_the_dora_change_to_its_recorded_error(
    rank: int | None, tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    base, network = random_network(tiny_model, dataset, tmp_path / "o", DORA_LOCON)
    naming = file_naming(base.unet.config, sdxl=False)
    dora = _dora_file(network, naming, tmp_path / "d.safetensors")
    fit = save_dora_compat(dora, network, rank=rank, **naming)
    assert fit.path == tmp_path / "d-lora-compat.safetensors"
    tensors = load_file(fit.path)
    assert not any("dora_scale" in k for k in tensors)
    meta = safe_open(str(fit.path), "pt").metadata()
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["loralab_dora_compat_of"] == "d.safetensors"
    assert float(meta["loralab_dora_compat_relative_error"]) == pytest.approx(
        fit.relative_error, rel=1e-5
    )

    exact = {
        f"{component}:{path}": delta for (component, path), delta in dora_weight_changes(network)
    }
    merged = _merged_changes(tiny_model, tensors, naming)
    assert set(exact) <= set(merged) and len(exact) == fit.modules
    residual = sum(float((merged[k] - exact[k]).double().pow(2).sum()) for k in exact)
    energy = sum(float(exact[k].double().pow(2).sum()) for k in exact)
    assert math.sqrt(residual / energy) == pytest.approx(fit.relative_error, rel=1e-3, abs=1e-6)
    untouched = [k for k in merged if k not in exact]
    assert all(merged[k].abs().max() == 0 for k in untouched)
    if rank is None:
        # The DoRA change is not low-rank: a same-rank fit loses part of it.
        assert 0.01 < fit.relative_error < 1
        assert meta["ss_network_dim"] == "4" and json.loads(meta["ss_network_args"]) == {
            "conv_dim": "2",
            "conv_alpha": "2",
        }
    else:
        assert fit.relative_error < 1e-6  # every module's full rank: exact


def test_diffusers_loads_the_compat_file(tiny_model: Path, dataset: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    base, network = random_network(tiny_model, dataset, tmp_path / "o", DORA_LOCON)
    naming = file_naming(base.unet.config, sdxl=False)
    fit = save_dora_compat(
        _dora_file(network, naming, tmp_path / "d.safetensors"), network, **naming
    )
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    reference = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    tensors = load_file(fit.path)
    merge_file(reference.unet, tensors, lambda n: kohya_module_name("unet", n, **naming))
    pipe.load_lora_weights(str(fit.path), adapter_name="compat")
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        loaded = pipe.unet(sample, torch.tensor([300]), context).sample
        expected = reference.unet(sample, torch.tensor([300]), context).sample
    torch.testing.assert_close(loaded, expected, atol=1e-5, rtol=1e-4)


def test_a_dora_run_saves_the_compat_file_beside_each_epoch(
    tiny_sdxl_model: Path, dataset: Path, tmp_path: Path
) -> None:
    values = base_values(tiny_sdxl_model, dataset, tmp_path / "o", max_train_epochs=3,
                         network_module="lycoris.kohya", network_args=["dora_wd=True"],
                         network_train_unet_only=True, save_every_n_epochs=1,
                         save_last_n_epochs=1)  # fmt: skip
    result = train(build_config(values))
    compat = result.final_path.with_name("tiny-lora-compat.safetensors")
    epochs = sorted(p.name for p in (tmp_path / "o").glob("tiny-0*.safetensors"))
    # save_last_n_epochs removes an old epoch's fit with its file.
    assert epochs == ["tiny-000002-lora-compat.safetensors", "tiny-000002.safetensors"]
    meta = safe_open(str(compat), "pt").metadata()
    assert 0 < float(meta["loralab_dora_compat_relative_error"]) < 1
    keys = load_file(compat)
    assert all(k.startswith("lora_unet_") and "_down_blocks_" not in k for k in keys)
    assert "lora_unet_input_blocks_3_1_proj_in.lora_up.weight" in keys  # SDXL naming

    once = {**values, "output_dir": str(tmp_path / "n"), "max_train_epochs": 1}
    none = train(build_config({**once, "dora_compat_rank": 0}))
    assert not none.final_path.with_name("tiny-lora-compat.safetensors").exists()


def test_wide_layers_reach_the_truncated_svds_error() -> None:
    """Layers wider than a few times the rank take the randomized SVD; its residual stays
    within 1 % of the optimum, and it leaves the global RNG untouched."""
    generator = torch.Generator().manual_seed(1)
    signal = torch.randn(320, 8, generator=generator) @ torch.randn(8, 640, generator=generator)
    delta = signal + 0.5 * torch.randn(320, 640, generator=generator)
    before = torch.random.get_rng_state()
    down, up, residual = fit_low_rank(delta, 8)
    assert torch.equal(torch.random.get_rng_state(), before)
    optimum = float((torch.linalg.svdvals(delta.double())[8:] ** 2).sum())
    assert down.shape == (8, 640) and up.shape == (320, 8)
    assert optimum * (1 - 1e-5) <= residual <= optimum * 1.01
    assert math.isclose(residual, float((delta - up @ down).double().pow(2).sum()), rel_tol=1e-6)

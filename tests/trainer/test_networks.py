"""Every network type trains, saves in the format A1111/ComfyUI read, and loads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lab.training.config import build_config
from tests.trainer.conftest import base_values
from tests.trainer.readers import merge_file
from trainer.callbacks import NeverStop, NullCallbacks
from trainer.formats import kohya_module_name
from trainer.loop import Trainer

NETWORKS = {
    "lora": ("networks.lora", [], "lora_down.weight"),
    "locon": ("networks.lora", ["conv_dim=2", "conv_alpha=1"], "lora_down.weight"),
    "dora": ("lycoris.kohya", ["algo=locon", "conv_dim=2", "dora_wd=True"], "dora_scale"),
    "loha": ("lycoris.kohya", ["algo=loha", "conv_dim=2", "conv_alpha=1"], "hada_w2_b"),
    "lokr": ("lycoris.kohya", ["algo=lokr", "factor=4", "conv_dim=2"], "lokr_w2"),
}


def _trained(tiny_model: Path, dataset: Path, out: Path, module: str, args: list[str]) -> Trainer:
    config = build_config(
        base_values(
            tiny_model,
            dataset,
            out,
            network_module=module,
            network_args=args,
            learning_rate=2e-2,
            max_train_epochs=1,
            text_encoder_lr=1e-2,
        )
    )
    trainer = Trainer(config, NullCallbacks(), NeverStop())
    trainer.run()
    return trainer


@pytest.mark.parametrize("kind", list(NETWORKS))
def test_network_trains_saves_and_loads_back(
    kind: str, tiny_model: Path, dataset: Path, tmp_path: Path
) -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    module, args, marker = NETWORKS[kind]
    trainer = _trained(tiny_model, dataset, tmp_path / "out", module, args)
    path = trainer.result.final_path
    tensors = load_file(path)
    names = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
    assert any(k.endswith(marker) for k in tensors), sorted(tensors)[:6]
    assert all(f"{n}.alpha" in tensors for n in names)
    if kind in ("locon", "dora", "loha", "lokr"):  # LoCon-style: the 3×3 convs are wrapped
        assert any(n.endswith("resnets_0_conv1") for n in names)
    meta = safe_open(str(path), "pt").metadata()
    assert meta["ss_network_module"] == module
    assert json.loads(meta["ss_network_args"]) == dict(a.split("=") for a in args)

    # Merge the file into fresh copies of the base the way ComfyUI reads it; the result
    # must compute what the trained PEFT modules compute.
    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(tiny_model / "text_encoder", local_files_only=True)
    merged = merge_file(unet, tensors, lambda n: "lora_unet_" + n.replace(".", "_"))
    merged += merge_file(text_encoder, tensors, lambda n: kohya_module_name("text_encoder", n))
    assert merged == len(names)  # every name in the file is a real module
    network = trainer.session.network
    network.unet.eval()
    network.text_encoder.eval()
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(4))
    ids = torch.tensor([[49406, 5, 7, 9, 49407] + [49407] * 72]).clamp(max=200)
    step = torch.tensor([500])
    with torch.no_grad():
        expected = network.unet(sample, step, context).sample
        loaded = unet(sample, step, context).sample
        base = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)(
            sample, step, context
        ).sample
        expected_text = network.text_encoder(ids)[0]
        loaded_text = text_encoder(ids)[0]
    assert (expected - base).abs().max() > 1e-4  # training changed the model
    torch.testing.assert_close(loaded, expected, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(loaded_text, expected_text, atol=1e-4, rtol=1e-3)

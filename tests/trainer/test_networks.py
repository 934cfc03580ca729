"""Every network type trains, saves in the format A1111/ComfyUI read, and loads back.

One run per network type, shared by the tests of this module.
"""

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
from trainer.tiny import build_dataset, merge_kohya_lora

NETWORKS = {
    "lora": ("networks.lora", [], "lora_down.weight"),
    "locon": ("networks.lora", ["conv_dim=2", "conv_alpha=1"], "lora_down.weight"),
    "dora": ("lycoris.kohya", ["algo=locon", "conv_dim=2", "dora_wd=True"], "dora_scale"),
    "loha": ("lycoris.kohya", ["algo=loha", "conv_dim=2", "conv_alpha=1"], "hada_w2_b"),
    "lokr": ("lycoris.kohya", ["algo=lokr", "factor=4", "conv_dim=2"], "lokr_w2"),
}


@pytest.fixture(scope="module", params=list(NETWORKS))
def trained(
    request: pytest.FixtureRequest, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Trainer]:
    """The network type and the finished run (the session still holds the PEFT modules)."""
    kind = request.param
    module, args, _ = NETWORKS[kind]
    root = tmp_path_factory.mktemp(kind)
    config = build_config(
        base_values(
            tiny_model,
            build_dataset(root / "data"),
            root / "out",
            network_module=module,
            network_args=args,
            learning_rate=2e-2,
            max_train_epochs=1,
            text_encoder_lr=1e-2,
        )
    )
    trainer = Trainer(config, NullCallbacks(), NeverStop())
    trainer.run()
    return kind, trainer


def test_network_trains_saves_and_loads_back(
    trained: tuple[str, Trainer], tiny_model: Path
) -> None:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    kind, trainer = trained
    module, args, marker = NETWORKS[kind]
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


@pytest.mark.parametrize("trained", ["locon"], indirect=True)
def test_locon_ranks_alphas_and_diffusers_load(
    trained: tuple[str, Trainer], tiny_model: Path
) -> None:
    """LoCon (kohya's ``conv_dim``/``conv_alpha``): 3×3 convs get their own rank and
    alpha, the rest keep the network's; diffusers' loader reads the file as kohya does."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    path = trained[1].result.final_path
    tensors = load_file(path)
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    weight = unet.down_blocks[0].resnets[0].conv1.weight  # [16, 16, 3, 3]
    assert tensors[f"{conv}.lora_down.weight"].shape == (2, weight.shape[1], 3, 3)
    assert tensors[f"{conv}.lora_up.weight"].shape == (weight.shape[0], 2, 1, 1)
    assert tensors[f"{conv}.alpha"].item() == 1.0
    # Linear layers inside resnets (time_emb_proj) keep the network's rank and alpha.
    linear = "lora_unet_down_blocks_0_resnets_0_time_emb_proj"
    assert tensors[f"{linear}.lora_down.weight"].shape[0] == 4
    assert tensors[f"{linear}.alpha"].item() == 2.0
    assert "lora_unet_down_blocks_0_downsamplers_0_conv.lora_down.weight" in tensors
    attention = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert tensors[f"{attention}.alpha"].item() == 2.0

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, local_files_only=True)
    pipe.load_lora_weights(str(path), adapter_name="locon")
    merged = UNet2DConditionModel.from_pretrained(tiny_model / "unet", local_files_only=True)
    count = merge_kohya_lora(merged, tensors)
    unet_names = {k.split(".")[0] for k in tensors if k.startswith("lora_unet_")}
    assert count == len(unet_names)  # every UNet key maps to a module
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    context = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(4))
    step = torch.tensor([500])
    with torch.no_grad():
        base = unet(sample, step, context).sample
        expected = merged(sample, step, context).sample
        loaded = pipe.unet(sample, step, context).sample
    assert (expected - base).abs().max() > 1e-4  # the LoCon did change the UNet
    torch.testing.assert_close(loaded, expected, atol=1e-5, rtol=1e-4)

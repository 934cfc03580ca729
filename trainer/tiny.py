"""A tiny SD1.5-shaped model and dataset, built in code: the demo runs on it when no base
model is given, and the tests use it, so nothing ever downloads weights.

The shapes follow SD1.5 where it matters to the trainer (a VAE that downsamples 8×,
4 latent channels, a UNet with cross-attention transformer blocks whose `proj_in`/
`proj_out` are 1×1 convolutions, a CLIP text encoder and a BPE tokenizer), with
widths small enough that a training step takes milliseconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

# Words the captions use; each becomes one token so the tokenizer needs no merges.
WORDS = ["sks", "dog", "cat", "photo", "of", "a", "red", "blue", "ball", "grass", "person", "tree"]


def write_tokenizer(folder: Path) -> None:
    """A byte-level BPE vocabulary with every single character plus whole `WORDS`."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars)]:
        vocab.setdefault(token, len(vocab))
    merges: list[str] = []
    for word in WORDS:
        # Merge left to right so each word collapses to one `word</w>` token.
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            merged = pieces[0] + pieces[1]
            vocab.setdefault(merged, len(vocab))
            pieces = [merged, *pieces[2:]]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")


def _tiny_vae(**extra: object) -> AutoencoderKL:
    """A VAE that downsamples 8× to 4 latent channels, as SD's does, with tiny widths."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        **extra,
    )


def _tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP tokenizer over the vocabulary `write_tokenizer` writes under `folder`."""
    from transformers import CLIPTokenizer

    tok_dir = folder / "_tokenizer_src"
    write_tokenizer(tok_dir)
    return CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True, model_max_length=77)


def build_tiny_sd15(folder: Path, *, prediction_type: str = "epsilon") -> Path:
    """Save a random-init SD1.5-shaped pipeline as a diffusers folder and return it."""
    import torch
    from diffusers import (
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = _tiny_vae()
    tokenizer = _tiny_tokenizer(folder)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    model_dir = folder / "tiny-sd15"
    pipe.save_pretrained(model_dir, safe_serialization=True)
    return model_dir


def build_tiny_sdxl(folder: Path) -> Path:
    """Save a random-init SDXL-shaped pipeline (two text encoders, the second with a
    projection; a UNet with ``text_time`` size conditioning and Linear ``proj_in``) as a
    diffusers folder and return it."""
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    torch.manual_seed(0)
    time_embed_dim, pooled_dim = 8, 32
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        transformer_layers_per_block=(1, 2),
        # Pooled text embedding + six size/crop numbers, each embedded in time_embed_dim.
        projection_class_embeddings_input_dim=pooled_dim + 6 * time_embed_dim,
        cross_attention_dim=64,  # the two encoders' hidden states side by side (32 + 32)
        norm_num_groups=8,
    )
    vae = _tiny_vae(scaling_factor=0.13025)  # SDXL's VAE scale
    tokenizer = _tiny_tokenizer(folder)

    def encoder_config(**extra: object) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **extra,
        )

    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        vae=vae,
        text_encoder=CLIPTextModel(encoder_config()),
        text_encoder_2=CLIPTextModelWithProjection(encoder_config(projection_dim=pooled_dim)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=scheduler,
    )
    model_dir = folder / "tiny-sdxl"
    pipe.save_pretrained(model_dir, safe_serialization=True)
    return model_dir


def make_image(path: Path, size: tuple[int, int], seed: int) -> None:
    """A smooth random image (low-frequency noise), so the VAE sees structure, not static."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.BILINEAR).save(path)


def build_dataset(root: Path, *, repeats: int = 2, count: int = 4) -> Path:
    """A kohya folder `root/<repeats>_sks/` with `count` images of two aspect ratios."""
    subset = root / f"{repeats}_sks"
    subset.mkdir(parents=True, exist_ok=True)
    # Square images land in the 64×64 bucket, 3:1 ones in 96×32 (resolution 64, steps 32).
    sizes = [(64, 64), (96, 32)]
    captions = ["sks dog, red ball, grass", "sks dog, blue ball", "sks cat, tree", "sks, person"]
    for i in range(count):
        make_image(subset / f"img{i}.png", sizes[i % len(sizes)], seed=i)
        (subset / f"img{i}.txt").write_text(captions[i % len(captions)])
    return root


def write_toml(path: Path, values: dict) -> Path:
    """A flat TOML file (strings, numbers, booleans, lists) without a TOML writer dependency."""

    def render(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(render(v) for v in value) + "]"
        return json.dumps(str(value))

    path.write_text("".join(f"{key} = {render(value)}\n" for key, value in values.items()))
    return path


def merge_kohya_lora(unet: object, tensors: dict, scale: float = 1.0) -> int:
    """W += scale · alpha/r · up·down for every ``lora_unet_`` module in a kohya state
    dict, read straight from the file (an independent reading of the format). Works for
    Linear, 1×1 and 3×3 convs (kohya's LoCon ``up`` is 1×1). Returns the modules merged."""
    merged = 0
    for name, module in unet.named_modules():  # type: ignore[attr-defined]
        key = "lora_unet_" + name.replace(".", "_")
        if f"{key}.lora_down.weight" not in tensors:
            continue
        down = tensors[f"{key}.lora_down.weight"].float()
        up = tensors[f"{key}.lora_up.weight"].float().flatten(1)
        alpha = tensors[f"{key}.alpha"].item()
        delta = (up @ down.flatten(1)) * (alpha / down.shape[0]) * scale
        module.weight.data += delta.reshape(module.weight.shape)
        merged += 1
    return merged

"""Tiny auto-captioning models built in code, for tests, benchmarks and the demo: nothing
ever downloads weights.

:func:`build_tiny_tagger` writes a WD14-shaped ONNX tagger (the real signature: NHWC
float32 BGR ``S×S`` in, sigmoid probabilities out, plus ``selected_tags.csv``). Its
weights are random but small, so each tag's probability sits near the value asked for
in ``scores``; the ``red theme`` tag instead follows the image's red minus green and
blue, which shows the channel order reached the model as BGR.
:func:`build_tiny_blip` writes a random-init BLIP captioner with a word-level tokenizer.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lab.autocaption import TagCategory

RED_TAG = "red_theme"
DEFAULT_TAGS: dict[str, tuple[int, float]] = {
    # name: (category, probability the tiny model gives it, whatever the image)
    "general": (TagCategory.RATING, 0.7),
    "sensitive": (TagCategory.RATING, 0.2),
    "1girl": (TagCategory.GENERAL, 0.95),
    "german_shepherd": (TagCategory.GENERAL, 0.9),
    "dog": (TagCategory.GENERAL, 0.8),
    "long_hair": (TagCategory.GENERAL, 0.75),
    "simple_background": (TagCategory.GENERAL, 0.7),
    "^_^": (TagCategory.GENERAL, 0.6),
    "outdoors": (TagCategory.GENERAL, 0.5),
    "grass": (TagCategory.GENERAL, 0.45),
    "tree": (TagCategory.GENERAL, 0.4),
    "sky": (TagCategory.GENERAL, 0.2),
    "hatsune_miku": (TagCategory.CHARACTER, 0.95),
    "kagamine_rin": (TagCategory.CHARACTER, 0.6),
    RED_TAG: (TagCategory.GENERAL, 0.0),
}


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def build_tiny_tagger(
    folder: Path,
    *,
    tags: Mapping[str, tuple[int, float]] = DEFAULT_TAGS,
    size: int = 448,
    seed: int = 0,
) -> Path:
    """Write ``model.onnx`` and ``selected_tags.csv`` to `folder` and return it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    names = list(tags)
    grid = 4  # average-pool the image to 4×4 per channel: 48 features
    features = 3 * grid * grid
    rng = np.random.default_rng(seed)
    # Random weights on 0-255 pixel means, small enough to move a probability a little.
    weights = (rng.standard_normal((features, len(names))) * 4e-5).astype(np.float32)
    bias = np.array([_logit(tags[n][1]) for n in names], dtype=np.float32)
    if RED_TAG in tags:
        # Features are channel-major after NHWC → NCHW: channel 2 of BGR input is red.
        column = names.index(RED_TAG)
        per_cell = 10.0 / (255.0 * grid * grid)
        weights[:, column] = -per_cell
        weights[2 * grid * grid :, column] = per_cell
        bias[column] = -3.0
    kernel = size // grid
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node(
                "AveragePool",
                ["nchw"],
                ["pooled"],
                kernel_shape=[kernel, kernel],
                strides=[kernel, kernel],
            ),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
            helper.make_node("Gemm", ["features", "weights", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["output"]),
        ],
        "tiny_wd14_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", len(names)])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime of the last years
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    with (folder / "selected_tags.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, name in enumerate(names):
            writer.writerow([1000 + i, name, int(tags[name][0]), 100_000 - i])
    return folder


WORDS = ["a", "photo", "of", "dog", "on", "the", "grass", "red", "ball", "sitting", "in", "park"]
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]


def build_tiny_blip(folder: Path, *, image_size: int = 64, seed: int = 0) -> Path:
    """Write a random-init BLIP captioner (processor + model) to `folder`; it never
    emits special tokens, so each caption is a run of `WORDS`."""
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(_SPECIALS + WORDS)}
    tokenizer = BertTokenizerFast(vocab=vocab, bos_token="[DEC]")
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2}  # fmt: skip
    config = BlipConfig(
        vision_config={**small, "image_size": image_size, "patch_size": 16},
        text_config={**small, "vocab_size": len(vocab), "encoder_hidden_size": 32,
                     "max_position_embeddings": 128, "bos_token_id": vocab["[DEC]"],
                     "pad_token_id": vocab["[PAD]"], "sep_token_id": vocab["[SEP]"],
                     "eos_token_id": vocab["[SEP]"]},
        projection_dim=32,
        image_text_hidden_size=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():  # random weights would often end at once: words only
        model.text_decoder.cls.predictions.bias[: len(_SPECIALS)] = -1e4
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_florence2(folder: Path, *, seed: int = 0) -> Path:
    """Write a random-init transformers-native Florence-2 (DaViT vision tower, BART
    text model, 64² input) with a word-level BPE tokenizer to `folder`. It answers a
    task token (``<CAPTION>``…) with a run of `WORDS`, as the real processor's task
    prompts and placeholder image tokens are in place."""
    import torch
    from transformers import (
        BartTokenizerFast,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
    vocab: dict[str, int] = {}
    # No merges: prompts tokenize to single characters; whole words only come out.
    for token in [*specials, *(chr(c) for c in range(33, 127)), "Ġ", *("Ġ" + w for w in WORDS)]:
        vocab.setdefault(token, len(vocab))
    tokenizer = BartTokenizerFast(vocab=vocab, merges=[],
                                  extra_special_tokens={"image_token": "<image>"})  # fmt: skip
    size, tokens_per_image = 64, (64 // 8) ** 2 + 1  # strides 4 × 2, plus a pooled token
    processor = Florence2Processor(
        image_processor=CLIPImageProcessor(
            size={"height": size, "width": size}, do_center_crop=False,
            image_seq_length=tokens_per_image),
        tokenizer=tokenizer,
    )  # fmt: skip
    config = Florence2Config(
        vision_config={"depths": [1, 1], "patch_size": [7, 3], "patch_stride": [4, 2],
                       "patch_padding": [3, 1], "patch_prenorm": [False, True],
                       "embed_dim": [16, 32], "num_heads": [2, 2], "num_groups": [2, 2],
                       "window_size": 4, "projection_dim": 32, "max_temporal_embeddings": 4,
                       "max_position_embeddings": 16},
        text_config={"model_type": "bart", "vocab_size": len(vocab), "d_model": 32,
                     "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                     "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                     "max_position_embeddings": 256, "bos_token_id": 0, "pad_token_id": 1,
                     "eos_token_id": 2, "decoder_start_token_id": 2, "forced_bos_token_id": 0},
        image_token_id=tokenizer.image_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration(config).eval()
    allowed = {vocab["Ġ" + w] for w in WORDS} | {vocab["</s>"]}
    model.generation_config.suppress_tokens = [i for i in range(len(vocab)) if i not in allowed]
    model.generation_config.min_new_tokens = 2
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder

"""Auto-captioning throughput of the tiny models built in code (nothing downloads).

    .venv/bin/python -m bench.bench_caption [--count 32] [--size 768] [--batch 8]
        [--blip-base] [--wd-vit]

Generates ``count`` photo-like ``size``² JPEGs, builds the tiny WD14-shaped ONNX tagger
(448² input, like the real v3 taggers), the tiny BLIP captioner and the tiny
transformers-native Florence-2 (64² input, 6 new tokens), then times
:func:`trainer.captioners.caption_files` — decode, model preprocessing, the model,
and the lab's rules — over the files, after one warm-up
batch. Prints images/s for each. ``--blip-base`` adds a random-init model with the
shapes of Salesforce/blip-image-captioning-base (ViT-B/16 at 384², BERT-base
decoder, 20 new tokens): what a real captioner costs on this CPU, without weights.
``--wd-vit`` adds a random-init ViT-B/16 tagger at 448² with 10,861 tags exported to
ONNX (the shapes and file size of SmilingWolf/wd-vit-tagger-v3): a real tagger's cost.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.bench_ingest import make_photo
from lab.autocaption import CaptionerConfig, CaptionRules
from trainer.captioners import caption_files, load_captioner
from trainer.captioners.tiny import build_tiny_blip, build_tiny_florence2, build_tiny_tagger


def build_blip_base_shaped(folder: Path) -> Path:
    """A random-init BLIP with blip-image-captioning-base's shapes (about 250M weights)."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    processor_size = 384
    build_tiny_blip(folder, image_size=processor_size)  # processor + tokenizer; model below
    config = BlipConfig(
        vision_config={"image_size": processor_size, "patch_size": 16},
        text_config={"vocab_size": 30524, "bos_token_id": 30522, "pad_token_id": 0,
                     "sep_token_id": 102, "eos_token_id": 102},
    )  # fmt: skip
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[:] = -1e4
        model.text_decoder.cls.predictions.bias[6:18] = 0  # only the tiny tokenizer's words
    model.save_pretrained(folder)
    return folder


def build_vit_shaped_tagger(folder: Path, tags: int = 10_861) -> Path:
    """A random-init ViT-B/16 tagger at 448² (NHWC BGR in, sigmoid out) as ONNX."""
    import csv

    import torch
    from transformers import ViTConfig, ViTModel

    class Tagger(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = ViTModel(ViTConfig(image_size=448, patch_size=16), add_pooling_layer=False)
            self.head = torch.nn.Linear(768, tags)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            hidden = self.vit(pixel_values=pixels.permute(0, 3, 1, 2) / 255.0).last_hidden_state
            return torch.sigmoid(self.head(hidden.mean(1)))

    folder.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(Tagger().eval(), (torch.zeros(1, 448, 448, 3),), str(folder / "model.onnx"),
                      input_names=["input"], output_names=["output"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                      dynamo=False)  # fmt: skip
    with (folder / "selected_tags.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i in range(tags):
            writer.writerow([i, f"tag_{i}", 9 if i < 4 else 4 if i > 9000 else 0, 1])
    return folder


def measure(label: str, config: CaptionerConfig, files: list[Path], batch: int) -> float:
    captioner = load_captioner(config)
    rules = CaptionRules.build(trigger="sks", class_token="dog", max_tags=30)
    caption_files(captioner, files[:batch], rules, batch_size=batch)  # warm-up
    started = time.perf_counter()
    captions = caption_files(captioner, files, rules, batch_size=batch)
    seconds = time.perf_counter() - started
    rate = len(files) / seconds
    print(f"{label:<34} {len(files):>4} images  {seconds:7.2f} s  {rate:8.2f} images/s  "
          f"({captioner.device}; e.g. {captions[0][:60]!r})")  # fmt: skip
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--blip-base", action="store_true")
    parser.add_argument("--wd-vit", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = []
        for i in range(args.count):
            path = root / f"photo_{i:03d}.jpg"
            make_photo(args.size, args.size, seed=i).save(path, quality=92)
            files.append(path)
        tagger = build_tiny_tagger(root / "wd")
        blip = build_tiny_blip(root / "blip")
        measure("tiny WD14 tagger (448² ONNX)", CaptionerConfig(kind="tagger", model=str(tagger)),
                files, args.batch)  # fmt: skip
        measure("tiny BLIP captioner (64², 6 tok)", CaptionerConfig(
            kind="captioner", model=str(blip), max_new_tokens=6), files, args.batch)  # fmt: skip
        florence = build_tiny_florence2(root / "florence")
        measure("tiny Florence-2 (64², 6 tok)", CaptionerConfig(
            kind="captioner", model=str(florence), prompt="<MORE_DETAILED_CAPTION>",
            max_new_tokens=6), files, args.batch)  # fmt: skip
        if args.wd_vit:
            vit = build_vit_shaped_tagger(root / "wd-vit")
            measure("WD-ViT-shaped tagger (448² ONNX)", CaptionerConfig(
                kind="tagger", model=str(vit)), files[:12], 4)  # fmt: skip
        if args.blip_base:
            base = build_blip_base_shaped(root / "blip-base")
            measure("BLIP-base-shaped (384², 20 tok)", CaptionerConfig(
                kind="captioner", model=str(base), max_new_tokens=20), files[:8], 4)  # fmt: skip


if __name__ == "__main__":
    main()

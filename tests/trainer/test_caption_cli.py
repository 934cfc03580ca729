"""`loralab dataset caption` end to end through click, on the tiny models built in code."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from loralab.cli import main
from trainer.captioners.tiny import WORDS, build_tiny_blip, build_tiny_tagger

pytest.importorskip("onnxruntime")


def run(*args):
    return CliRunner().invoke(main, ["dataset", "caption", *args], catch_exceptions=False)


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "data" / "10_sks dog"
    folder.mkdir(parents=True)
    for i, colour in enumerate([(230, 20, 20), (20, 20, 230), (20, 200, 20)]):
        Image.new("RGB", (64, 64), colour).save(folder / f"{i}.png")
    (folder / "2.txt").write_text("sks, dog, mine\n")
    return folder.parent


def test_tagger_writes_captions_beside_images_and_keeps_existing_ones(dataset, tmp_path):
    tagger = build_tiny_tagger(tmp_path / "wd")
    result = run(str(dataset), "--model", str(tagger), "--trigger", "sks", "--class-token",
                 "dog", "--base", "pony", "--blacklist", "simple_background", "--max-tags",
                 "4", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["kind"], report["written"], report["skipped"]) == ("tagger", 2, 1)
    assert report["images_per_second"] > 0
    folder = dataset / "10_sks dog"
    assert (folder / "2.txt").read_text() == "sks, dog, mine\n"
    for name in ("0", "1"):
        tags = (folder / f"{name}.txt").read_text().strip().split(", ")
        assert report["captions"][f"10_sks dog/{name}.png"] == ", ".join(tags)
        assert tags[:3] == ["sks", "dog", "hatsune miku"] and len(tags) == 6
        assert "simple background" not in tags and tags.count("dog") == 1
    red = (folder / "0.txt").read_text()
    assert "red theme" in red and "red theme" not in (folder / "1.txt").read_text()


def test_captioner_overwrites_when_asked(dataset, tmp_path):
    blip = build_tiny_blip(tmp_path / "blip")
    result = run(str(dataset), "--model", str(blip), "--trigger", "sks", "--overwrite",
                 "--max-new-tokens", "4")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("3 captioned, 0 skipped (already captioned) with captioner")
    for path in sorted((dataset / "10_sks dog").glob("*.txt")):
        trigger, sentence = path.read_text().strip().split(", ")
        assert trigger == "sks" and set(sentence.split()) <= set(WORDS)


def test_a_missing_model_is_a_clear_error(dataset, tmp_path):
    result = CliRunner().invoke(
        main, ["dataset", "caption", str(dataset), "--model", str(tmp_path / "no.onnx")]
    )
    assert result.exit_code == 1
    assert "No tagger model at" in result.output

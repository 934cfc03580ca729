"""The captioner models on tiny ONNX / BLIP models built in code (nothing downloads):
the WD14 input contract (BGR, white padding, size from the model), thresholds per
category, the lab's rules on the result, batching, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab.autocaption import CaptionerConfig, CaptionerKind, CaptionRules
from trainer.captioners import CaptionerError, caption_files, guess_kind, load_captioner, open_rgb
from trainer.captioners.tiny import (
    RED_TAG,
    WORDS,
    build_tiny_blip,
    build_tiny_florence2,
    build_tiny_tagger,
)
from trainer.captioners.wd14 import prepare

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_tagger(tmp_path_factory.mktemp("tagger"))


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    return build_tiny_blip(tmp_path_factory.mktemp("blip"))


def _files(folder: Path, colours: list[tuple[int, int, int]], size=(96, 96)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"img{i}.png"
        Image.new("RGB", size, colour).save(path)
        paths.append(path)
    return paths


def test_tagger_has_the_wd14_signature_and_tag_list(tagger_dir):
    import onnxruntime as ort

    session = ort.InferenceSession(str(tagger_dir / "model.onnx"))
    (model_input,) = session.get_inputs()
    assert model_input.shape == ["batch", 448, 448, 3] and model_input.type == "tensor(float)"
    header = (tagger_dir / "selected_tags.csv").read_text().splitlines()[0]
    assert header == "tag_id,name,category,count"
    tagger = load_captioner(CaptionerConfig(kind="tagger", model=str(tagger_dir)))
    assert tagger.size == 448 and tagger.device == "cpu"
    assert guess_kind(str(tagger_dir)) is CaptionerKind.TAGGER
    assert guess_kind(str(tagger_dir / "model.onnx")) is CaptionerKind.TAGGER


def test_preprocessing_pads_white_and_feeds_bgr():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    array = prepare(image, 448)
    assert array.shape == (448, 448, 3) and array.dtype == np.float32
    assert tuple(array[224, 224]) == (0.0, 0.0, 255.0)  # red, as B, G, R
    assert tuple(array[5, 224]) == (255.0, 255.0, 255.0)  # the padding is white


def test_tagger_sees_colour_in_bgr_order(tagger_dir, tmp_path):
    tagger = load_captioner(CaptionerConfig(kind="tagger", model=str(tagger_dir)))
    red, blue = _files(tmp_path, [(250, 10, 10), (10, 10, 250)])
    tags = tagger.caption([open_rgb(red), open_rgb(blue)])
    assert RED_TAG in tags[0] and RED_TAG not in tags[1]


def test_tagger_thresholds_are_per_category(tagger_dir, tmp_path):
    (path,) = _files(tmp_path, [(90, 120, 60)])
    strict = load_captioner(CaptionerConfig(kind="tagger", model=str(tagger_dir)))
    tags = strict.caption([open_rgb(path)])[0]
    # The tiny model scores hatsune_miku ~0.95 and kagamine_rin ~0.6 (characters), grass
    # ~0.45 and sky ~0.2 (general): 0.85 for characters and 0.35 for general tags.
    assert tags[0] == "hatsune_miku" and "kagamine_rin" not in tags
    assert "grass" in tags and "sky" not in tags
    assert "general" not in tags  # rating tags only when asked for
    lenient = load_captioner(CaptionerConfig(
        kind="tagger", model=str(tagger_dir), character_threshold=0.5, general_threshold=0.5,
        include_rating=True))  # fmt: skip
    tags = lenient.caption([open_rgb(path)])[0]
    assert tags[:2] == ["hatsune_miku", "kagamine_rin"]
    assert "grass" not in tags and tags[-1] == "general"


def test_caption_files_applies_the_rules_in_batches(tagger_dir, tmp_path):
    files = _files(tmp_path, [(200, 30, 30), (30, 200, 30), (30, 30, 200)], size=(120, 80))
    tagger = load_captioner(CaptionerConfig(kind="tagger", model=str(tagger_dir)))
    rules = CaptionRules.build(trigger="sks", class_token="dog",
                               blacklist=["simple_background"], max_tags=4)  # fmt: skip
    seen: list[int] = []
    captions = caption_files(tagger, files, rules, batch_size=2, progress=seen.append)
    assert seen == [2, 1] and len(captions) == 3
    for caption in captions:
        tags = caption.split(", ")
        assert tags[:2] == ["sks", "dog"] and tags.count("dog") == 1
        assert "german shepherd" in tags and "simple background" not in tags
        assert len(tags) == 2 + 4 and all("_" not in t or t == "^_^" for t in tags)


def test_blip_captioner_writes_a_sentence_after_trigger_and_class(blip_dir, tmp_path):
    captioner = load_captioner(
        CaptionerConfig(kind="captioner", model=str(blip_dir), max_new_tokens=6)
    )
    assert guess_kind(str(blip_dir)) is CaptionerKind.CAPTIONER
    files = _files(tmp_path, [(200, 30, 30), (30, 200, 30)])
    rules = CaptionRules.build(trigger="sks", class_token="dog")
    captions = caption_files(captioner, files, rules, batch_size=2)
    for caption in captions:
        trigger, cls, sentence = caption.split(", ")
        assert (trigger, cls) == ("sks", "dog")
        words = sentence.split()
        assert 1 <= len(words) <= 6 and set(words) <= set(WORDS)


def test_missing_models_and_mismatched_tag_lists_are_clear_errors(tagger_dir, tmp_path):
    with pytest.raises(CaptionerError, match="No tagger model at"):
        load_captioner(CaptionerConfig(kind="tagger", model=str(tmp_path / "nothing")))
    with pytest.raises(CaptionerError, match=r"No captioner model at .*allow_download"):
        load_captioner(CaptionerConfig(kind="captioner", model="Salesforce/blip-base"))
    short = tmp_path / "short.csv"
    short.write_text("tag_id,name,category,count\n1,dog,0,5\n")
    with pytest.raises(CaptionerError, match="scores 15 tags but the tag list has 1"):
        load_captioner(CaptionerConfig(kind="tagger", model=str(tagger_dir), tags_csv=short))


def test_transparent_images_are_flattened_onto_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(path)
    assert open_rgb(path).getpixel((4, 4)) == (255, 255, 255)


def test_a_conditional_prompt_is_used_and_not_echoed(blip_dir, tmp_path):
    from trainer.captioners.hf import clean_sentence

    captioner = load_captioner(CaptionerConfig(
        kind="captioner", model=str(blip_dir), prompt="a photo of", max_new_tokens=4))  # fmt: skip
    (path,) = _files(tmp_path, [(200, 30, 30)])
    raw = captioner.processor.batch_decode(
        captioner.model.generate(**captioner._inputs([open_rgb(path)]), max_new_tokens=4),
        skip_special_tokens=True,
    )[0]
    assert raw.startswith("a photo of ")  # BLIP continues the prompt...
    (sentence,) = captioner.caption([open_rgb(path)])[0]
    assert sentence == raw[len("a photo of ") :].rstrip(".")  # ...which is cut off
    assert clean_sentence("A dog on grass.  ") == "A dog on grass"
    assert clean_sentence("<MORE_DETAILED_CAPTION> x", "<MORE_DETAILED_CAPTION>") == (
        "<MORE_DETAILED_CAPTION> x"
    )  # a task token is not text the model repeats


def test_florence2_answers_its_task_token_with_a_sentence(tmp_path):
    pytest.importorskip("transformers")
    folder = build_tiny_florence2(tmp_path / "florence")
    captioner = load_captioner(CaptionerConfig(kind="captioner", model=str(folder),
                                               prompt="<MORE_DETAILED_CAPTION>",
                                               max_new_tokens=6))  # fmt: skip
    files = _files(tmp_path / "img", [(200, 30, 30), (30, 30, 200)], size=(80, 50))
    rules = CaptionRules.build(trigger="sks", class_token="dog")
    for caption in caption_files(captioner, files, rules, batch_size=2):
        trigger, cls, sentence = caption.split(", ")
        assert (trigger, cls) == ("sks", "dog")
        assert sentence.split() and set(sentence.split()) <= set(WORDS)

"""The auto-captioning rules, pure: tag selection by category threshold, spelling,
blacklist, implications, max tags, trigger and class token, base styles, settings."""

from __future__ import annotations

import pytest

from lab.autocaption import (
    BUILTIN_IMPLICATIONS,
    CaptionerKind,
    CaptionRules,
    CaptionSettings,
    Implications,
    Prediction,
    TagCategory,
    apply_rules,
    parse_implications,
    rules_for,
    select_tags,
    style_for_base,
    tag_text,
)

G, C, R = TagCategory.GENERAL, TagCategory.CHARACTER, TagCategory.RATING


def test_general_and_character_tags_have_their_own_thresholds():
    predictions = [
        Prediction("long_hair", G, 0.40),
        Prediction("sky", G, 0.34),
        Prediction("hatsune_miku", C, 0.84),
        Prediction("kagamine_rin", C, 0.90),
        Prediction("smile", G, 0.70),
        Prediction("general", R, 0.80),
        Prediction("sensitive", R, 0.15),
    ]
    assert select_tags(predictions, general_threshold=0.35, character_threshold=0.85) == [
        "kagamine_rin",  # characters first, then general tags by confidence
        "smile",
        "long_hair",
    ]
    lenient = select_tags(predictions, general_threshold=0.3, character_threshold=0.5)
    assert lenient == ["kagamine_rin", "hatsune_miku", "smile", "long_hair", "sky"]
    rated = select_tags(predictions, include_rating=True)
    assert rated[-1] == "general" and "sensitive" not in rated


def test_underscores_become_spaces_but_kaomoji_stay():
    assert tag_text("long_hair") == "long hair"
    assert tag_text("^_^") == "^_^"
    assert tag_text("looking_at_viewer", replace_underscores=False) == "looking_at_viewer"


def test_implied_tags_are_dropped_transitively_and_by_any_spelling():
    tags = ["dog", "German_Shepherd", "long hair", "absurdly_long_hair", "smile"]
    assert BUILTIN_IMPLICATIONS.drop_implied(tags) == ["German_Shepherd", "absurdly_long_hair",
                                                     "smile"]  # fmt: skip
    # Without the specific tag nothing is dropped.
    assert BUILTIN_IMPLICATIONS.drop_implied(["dog", "long hair"]) == ["dog", "long hair"]


def test_implications_from_a_danbooru_export_count_active_rows_only():
    text = (
        "id,antecedent_name,consequent_name,status\n"
        "1,border_collie,dog,active\n"
        "2,wolf,dog,deleted\n"
    )
    table = parse_implications(text)
    assert table.implied_by("border collie") == {"dog"}
    assert table.implied_by("wolf") == set()
    plain = parse_implications("# mine\nsword,weapon\nkatana,sword\n")
    assert plain.implied_by("katana") == {"sword", "weapon"}
    assert len(Implications().merged(plain)) == 2


def test_rules_order_trigger_first_class_second_and_the_rest_capped():
    rules = CaptionRules.build(
        trigger="sks", class_token="dog", blacklist=["Simple Background"], max_tags=3
    )
    raw = ["german_shepherd", "dog", "simple_background", "long_hair", "outdoors",
           "grass", "sks", "^_^"]  # fmt: skip
    out = apply_rules(raw, rules)
    # "dog" is implied by german shepherd but is the class token: it comes back second.
    assert out == ["sks", "dog", "german shepherd", "long hair", "outdoors"]


def test_rules_on_a_sentence_put_the_trigger_and_class_in_front():
    rules = CaptionRules.build(trigger="sks", class_token="dog")
    assert apply_rules(["a dog sitting on the grass"], rules) == [
        "sks", "dog", "a dog sitting on the grass"
    ]  # fmt: skip
    assert apply_rules(["a photo, of a dog"], CaptionRules.build()) == ["a photo", "of a dog"]
    assert apply_rules(["long_hair", "dog"], CaptionRules.build(class_token="cat")) == [
        "cat", "long hair", "dog"
    ]  # fmt: skip


def test_base_styles_pick_sentences_for_sd_and_tags_for_anime_bases():
    assert style_for_base("sd15").kind is CaptionerKind.CAPTIONER
    assert style_for_base("SDXL").kind is CaptionerKind.CAPTIONER
    assert style_for_base("pony").kind is CaptionerKind.TAGGER
    assert style_for_base("illustrious").replace_underscores
    assert not style_for_base("noobai", keep_underscores=["NoobAI"]).replace_underscores


def test_settings_resolve_models_by_name_default_and_kind(tmp_path):
    implications = tmp_path / "imp.csv"
    implications.write_text("border_collie,dog\n")
    settings = CaptionSettings(
        models={
            "blip": {"kind": "captioner", "model": "/m/blip"},
            "wd-vit": {"kind": "tagger", "model": "/m/vit"},
            "wd-eva": {"kind": "tagger", "model": "/m/eva"},
        },
        default={"tagger": "wd-eva"},
        keep_underscores=("pony",),
        implications=implications,
        blacklist=("watermark",),
    )
    assert settings.resolve(CaptionerKind.TAGGER, None)[0] == "wd-eva"
    assert settings.resolve(CaptionerKind.CAPTIONER, None)[0] == "blip"
    assert settings.resolve(None, "wd-vit")[1].model == "/m/vit"
    with pytest.raises(KeyError, match="No captioning model named 'x'"):
        settings.resolve(None, "x")
    with pytest.raises(KeyError, match="No tagger model is configured"):
        CaptionSettings().resolve(CaptionerKind.TAGGER, None)
    rules = rules_for(settings, base="pony", trigger="sks", class_token="dog")
    out = apply_rules(["border_collie", "dog", "watermark", "long_hair"], rules)
    assert out == ["sks", "dog", "border_collie", "long_hair"]

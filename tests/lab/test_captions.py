"""Caption rules: decoding, tag splitting, kohya keep_tokens/shuffle, trigger checks."""

from __future__ import annotations

import random

import pytest

from lab.captions import (
    check_trigger,
    decode_caption,
    enforce_trigger,
    join_tags,
    normalise_caption,
    shuffle_caption,
    split_fixed,
    split_tags,
    tag_frequency,
)
from lab.dataset.reasons import DatasetError, Reason, Warn


def test_decode_tolerates_bom_and_refuses_binary_oversized_and_non_utf8():
    assert decode_caption("\ufeffohwx, café".encode(), "c.txt") == "ohwx, café"
    cases = {
        b"abc\x00def": Reason.CAPTION_BINARY,
        b"tag\x07bell": Reason.CAPTION_BINARY,
        b"x" * 101: Reason.CAPTION_TOO_LARGE,
        b"caf\xe9": Reason.CAPTION_ENCODING,
    }
    for data, reason in cases.items():
        with pytest.raises(DatasetError) as caught:
            decode_caption(data, "c.txt", max_bytes=100)
        assert caught.value.reason is reason
        assert str(caught.value).startswith("c.txt: ")


def test_split_and_join_normalise_whitespace_and_empty_tags():
    assert split_tags("  ohwx ,, woman,\tred   hair ,\n smiling,") == [
        "ohwx",
        "woman",
        "red hair",
        "smiling",
    ]
    assert join_tags(["a", "b c"]) == "a, b c"
    assert normalise_caption("ohwx, Woman, woman ,ohwx") == "ohwx, Woman"


def test_split_fixed_follows_kohya_keep_tokens_and_separator():
    assert split_fixed("a, b, c, d", keep_tokens=2) == (["a", "b"], ["c", "d"], [])
    assert split_fixed("a, b ||| c, d ||| e", keep_tokens=0, keep_tokens_separator="|||") == (
        ["a", "b"],
        ["c", "d"],
        ["e"],
    )
    # The separator wins over keep_tokens when present, as in kohya.
    assert split_fixed("a ||| b, c", keep_tokens=2, keep_tokens_separator="|||")[0] == ["a"]


def test_shuffle_keeps_fixed_tokens_in_place_and_permutes_the_rest():
    caption = "ohwx, woman, " + ", ".join(f"t{i}" for i in range(20))
    rng = random.Random(1)
    outputs = {shuffle_caption(caption, rng, keep_tokens=2) for _ in range(20)}
    assert len(outputs) > 1
    for out in outputs:
        tags = split_tags(out)
        assert tags[:2] == ["ohwx", "woman"]
        assert sorted(tags[2:]) == sorted(f"t{i}" for i in range(20))
    dropped = shuffle_caption(caption, random.Random(2), keep_tokens=2, tag_dropout_rate=0.5)
    assert split_tags(dropped)[:2] == ["ohwx", "woman"]
    assert 2 < len(split_tags(dropped)) < 22


def test_trigger_check_and_enforce():
    assert check_trigger(["ohwx", "woman", "x"], "ohwx", "woman").problems == ()
    assert check_trigger(["woman", "ohwx"], "ohwx", "woman").problems == (
        Warn.TRIGGER_NOT_FIRST,
        Warn.CLASS_NOT_SECOND,
    )
    assert check_trigger(["x"], "ohwx").problems == (Warn.TRIGGER_MISSING,)
    assert check_trigger(["OHWX"], "ohwx").trigger_first  # case-insensitive
    assert enforce_trigger(["red", "woman", "ohwx", "smile"], "ohwx", "woman") == [
        "ohwx",
        "woman",
        "red",
        "smile",
    ]
    assert enforce_trigger([], "ohwx") == ["ohwx"]


def test_tag_frequency_counts_captions_most_common_first():
    freq = tag_frequency([["a", "b"], ["b", "c", "b"], ["b"]])
    assert freq == {"b": 3, "a": 1, "c": 1}
    assert next(iter(freq)) == "b"

"""docs/trainer-options.md is generated from the trainer's config model."""

from __future__ import annotations

from pathlib import Path

from lab.training.config import TrainConfig
from lab.training.presets import PRESETS
from loralab.reference import DOC, REFERENCE_PRESET, trainer_options_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_is_current():
    text = (ROOT / DOC).read_text("utf-8")
    assert text == trainer_options_markdown(), (
        "docs/trainer-options.md is out of date: run `python -m loralab.reference`"
    )


def test_every_key_and_preset_has_a_row():
    text = trainer_options_markdown()
    rows = {
        line.split("|")[1].strip().strip("`")
        for line in text.splitlines()
        if line.startswith("| `")
    }
    assert set(TrainConfig.model_fields) <= rows
    assert set(PRESETS) - {REFERENCE_PRESET} <= rows
    assert f"`{REFERENCE_PRESET}` in full" in text


def test_notes_under_fields_are_shown():
    text = trainer_options_markdown()
    line = next(row for row in text.splitlines() if row.startswith("| `lr_warmup_steps`"))
    assert "fraction of the total steps" in line
    assert "| `network_dim` | `int` | `4` | ≥ 1 |" in text


def test_help_prints_usage_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from loralab import reference

    monkeypatch.setattr(reference, "DOC", tmp_path / "options.md")
    assert reference.main(["--help"]) == 0
    assert "usage: python -m loralab.reference" in capsys.readouterr().out
    assert not (tmp_path / "options.md").exists()
    assert reference.main(["--wat"]) == 2
    assert not (tmp_path / "options.md").exists()

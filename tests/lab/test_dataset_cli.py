"""`loralab dataset import/check/export` end to end through click."""

from __future__ import annotations

import json

from click.testing import CliRunner

from loralab.cli import main
from tests.lab import corpus


def run(*args):
    return CliRunner().invoke(main, ["dataset", *args], catch_exceptions=False)


def make_src(root):
    root.mkdir()
    for i in range(3):
        corpus.photo(640, 480, seed=200 + i).save(root / f"p{i}.jpg", quality=90)
    (root / "p0.txt").write_text("ohwx, woman")
    (root / "bad.png").write_bytes(b"%PDF-1.4 not an image")
    return root


def test_import_json_then_check_json(tmp_path):
    src = make_src(tmp_path / "src")
    dest = tmp_path / "dest"
    result = run("import", str(src), str(dest), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # stdout holds exactly one JSON object
    assert len(payload["accepted"]) == 3
    assert [(r["source"], r["code"]) for r in payload["rejected"]] == [
        ("bad.png", "unsupported_format")
    ]
    assert payload["summary"]["accepted"] == 3
    stored = {a["stored"] for a in payload["accepted"]}
    captions = {a["caption"] for a in payload["accepted"] if a["caption"]}
    assert {p.name for p in dest.iterdir()} == stored | captions  # nothing of bad.png

    check = run("check", str(dest), "--json", "--resolution", "768", "--family", "sdxl")
    assert check.exit_code == 0, check.output
    report = json.loads(check.stdout)
    assert report["resolution"] == [768, 768] and report["family"] == "sdxl"
    assert len(report["images"]) == 3
    assert all(len(image["bucket"]) == 2 for image in report["images"])
    assert report["counts"]["captioned"] == 1


def test_import_zip_and_human_output(tmp_path):
    png = corpus.encode(corpus.photo(), "PNG")
    archive = tmp_path / "up.zip"
    archive.write_bytes(corpus.zip_of({"a.png": png, "../evil.png": png}))
    result = run("import", str(archive), str(tmp_path / "d"))
    assert result.exit_code == 0
    assert "1 accepted, 1 rejected" in result.stdout
    assert "zip_slip" in result.stdout


def test_usage_and_io_errors_exit_non_zero(tmp_path):
    missing = run("import", str(tmp_path / "nope"), str(tmp_path / "d"))
    assert missing.exit_code == 2 and "does not exist" in missing.output
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    not_a_source = run("import", str(a_file), str(tmp_path / "d"))
    assert not_a_source.exit_code == 1 and "folder or a .zip" in not_a_source.output
    not_a_dir = run("check", str(a_file))
    assert not_a_dir.exit_code == 2 and "not a folder" in not_a_dir.output
    bad_enforce = run("import", str(tmp_path), str(tmp_path / "d"), "--enforce-trigger")
    assert bad_enforce.exit_code == 2


def test_export_command(tmp_path):
    src = make_src(tmp_path / "src")
    assert run("import", str(src), str(tmp_path / "ds")).exit_code == 0
    out = run(
        "export", str(tmp_path / "ds"), str(tmp_path / "train"), "--trigger", "ohwx",
        "--class-token", "woman", "--repeats", "4",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    folder = tmp_path / "train" / "4_ohwx woman"
    assert len(list(folder.glob("*.txt"))) == 3
    both = run("export", str(tmp_path / "ds"), str(tmp_path / "t2"), "--trigger", "x")
    assert both.exit_code == 2


def test_text_output_names_the_files_behind_each_warning(tmp_path):
    src = make_src(tmp_path / "src")
    dest = tmp_path / "dest"
    imported = run("import", str(src), str(dest))
    # p1/p2 have no caption: import says so per file, not only its rejections.
    assert "warning [caption_missing]" in imported.stdout
    assert "p1.jpg" in imported.stdout and "p2.jpg" in imported.stdout
    (src / "p1.caption").write_text("ohwx, smiling")  # kohya's caption suffix
    check = run("check", str(src), "--trigger", "ohwx")
    assert check.exit_code == 0
    lines = check.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "warning [captions_missing]" in line)
    assert lines[at + 1].strip() == "p2.jpg"  # p0 has .txt, p1 has .caption
    assert "cannot identify" not in check.stdout  # the .caption file is not an image
    assert "bad.png: not a JPEG, PNG or WebP image (PDF)" in check.stdout

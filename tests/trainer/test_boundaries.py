"""The trainer imports only `lab` of our packages: never db, bot, worker, discord, celery."""

from __future__ import annotations

import ast
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[2] / "trainer"
FORBIDDEN = {"db", "bot", "worker", "discord", "celery", "loralab", "sqlalchemy"}


def test_trainer_imports_no_forbidden_package() -> None:
    offenders = []
    for path in TRAINER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in TRAINER.rglob("*.py")}
    assert max(sizes.values()) <= 400, sizes


def test_reading_a_config_does_not_import_torch() -> None:
    """The bot/worker may validate a config without loading torch."""
    import subprocess
    import sys

    code = (
        "import sys, trainer; from trainer import load_config, TrainConfig; "
        "import trainer.errors, lab.training.presets; print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=TRAINER.parent,
    )
    assert out.stdout.strip() == "False"

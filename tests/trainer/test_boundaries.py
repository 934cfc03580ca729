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
    assert max(sizes.values()) <= 420, sizes

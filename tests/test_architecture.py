"""The package import rules of docs/architecture.md, enforced on the source (AST)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH_STACK = {"torch", "diffusers", "peft", "transformers", "accelerate", "bitsandbytes"}
TORCH_STACK |= {"onnxruntime"}  # the auto-tagger's runtime: as heavy, same rule

# package -> top-level modules it must never import (ours and third-party)
NEVER: dict[str, set[str]] = {
    "lab": {"db", "bot", "worker", "trainer", "discord", "sqlalchemy", "celery", "loralab"}
    | TORCH_STACK,
    "trainer": {"db", "bot", "worker", "discord", "celery", "sqlalchemy", "loralab"},
    "db": {"bot", "worker", "trainer", "discord", "celery", "loralab"} | TORCH_STACK,
    "bot": {"worker", "trainer", "loralab"} | TORCH_STACK,
    "worker": {"bot", "discord", "loralab"},
}
# Imports allowed only inside a function body (so the parent never loads them).
ONLY_INSIDE_FUNCTIONS: dict[str, set[str]] = {"worker": {"trainer"} | TORCH_STACK}


def _imports(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(top-level module, line, imported at module level?) for every import."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                found.extend(
                    [(a.name.split(".")[0], child.lineno, not in_function) for a in child.names]
                )
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], child.lineno, not in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for module, line, top_level in _imports(tree):
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if module in NEVER[package]:
                bad.append(where)
            elif top_level and module in ONLY_INSIDE_FUNCTIONS.get(package, set()):
                bad.append(where + " at module level (import it inside the task body)")
    return bad


@pytest.mark.parametrize("package", sorted(NEVER))
def test_package_respects_import_rules(package):
    assert (ROOT / package / "__init__.py").exists()
    assert violations(package) == []


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
    """The rule test can fail: a planted forbidden import is reported."""
    pkg = tmp_path / "lab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("import os\n\ndef f():\n    from torch import nn\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations("lab") == ["lab/bad.py:4 imports torch"]


def test_core_and_database_layers_load_without_torch_or_discord():
    code = (
        "import sys, lab.lifecycle, lab.settings, db.services, db.migrate, loralab.cli;"
        "bad = sorted(m for m in ('torch', 'discord', 'diffusers', 'celery') if m in sys.modules);"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == ""

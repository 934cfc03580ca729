"""The package import rules of docs/architecture.md, enforced on the source (AST)."""

from __future__ import annotations

import ast
import graphlib
import os
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


# -- no import cycles ---------------------------------------------------------------

OURS = ("lab", "db", "bot", "worker", "trainer", "loralab")


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`, in function bodies too, except those under
    `if TYPE_CHECKING:` (they never run)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append(child)
        elif isinstance(child, ast.If) and _is_type_checking(child):
            found.extend(_runtime_imports(ast.Module(body=child.orelse, type_ignores=[])))
        else:
            found.extend(_runtime_imports(child))
    return found


def import_graph(root: Path, packages: tuple[str, ...] = OURS) -> dict[str, set[str]]:
    """module -> the modules of ours it imports, at module level or inside a function
    (a function-level import closes a circle as surely as a top-level one). Imports
    under `if TYPE_CHECKING:` never run and are left out."""
    files: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def ours(name: str) -> str | None:  # the module `name` is, or the package it is in
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        targets: set[str | None] = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(ours(alias.name) for alias in node.names)
                continue
            up = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*up, node.module] if node.module else up)
            for alias in node.names:  # `from pkg import module` names the module
                full = f"{base}.{alias.name}"
                targets.add(full if full in files else ours(base))
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (``[a, b, …, a]``), or ``[]`` when the graph has none."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return list(reversed(error.args[1]))
    return []


def test_no_import_cycles_across_our_modules():
    graph = import_graph(ROOT)
    assert {"worker.app", "worker.tasks", "bot.app", "loralab.cli"} <= graph.keys()
    assert "worker.runtime" in graph["worker.tasks"]  # the graph sees real edges
    assert import_cycle(graph) == []


def test_the_cycle_checker_sees_a_function_level_circle(tmp_path):
    """The cycle test can fail: a circle closed by an import inside a function body (the
    shape the worker once had) is found; a `TYPE_CHECKING` import is not an edge."""
    pkg = tmp_path / "worker"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text("from worker import runtime\n")
    (pkg / "runtime.py").write_text("def settings():\n    from worker.app import app\n")
    (pkg / "hint.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from worker.app import app\n"
    )
    graph = import_graph(tmp_path, ("worker",))
    assert graph["worker.hint"] == set()
    assert import_cycle(graph) in (
        ["worker.app", "worker.runtime", "worker.app"],
        ["worker.runtime", "worker.app", "worker.runtime"],
    )


# -- what the bot process loads -----------------------------------------------------

BOT_PROCESS = """
import asyncio, importlib, pkgutil, sys
import bot.app, bot.exts, loralab.commands.bot
from lab.settings import BotSettings

for info in pkgutil.walk_packages(bot.exts.__path__, "bot.exts."):
    importlib.import_module(info.name)

async def start(self, token, *, reconnect=True):  # everything up to the gateway login
    self.sync_commands = False
    await self.setup_hook()

bot.app.LabBot.start = start
asyncio.run(loralab.commands.bot._run(BotSettings()))
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("worker", "torch"))))
"""


def test_the_bot_process_loads_no_worker_lifecycle_and_no_torch(tmp_path):
    """`loralab bot` wired as it runs (every cog loaded, its Celery client built) loads
    only the side-effect-free `worker.client`: no app with lifecycle hooks, no reaper."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORALAB_", "DATABASE_"))}
    env.pop("BROKER_URL", None)
    env |= {"LORALAB_HOME": str(tmp_path), "DISCORD_TOKEN": "not-used", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", BOT_PROCESS],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(out.stdout.strip().splitlines()[-1].split(","))
    assert sorted(loaded - {"worker", "worker.client"}) == []  # no app, hooks, reaper, torch
    assert "worker.client" in loaded  # the bot did build its task sender

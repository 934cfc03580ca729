"""The README's install lines work from a clone: the package is not on PyPI."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_install_lines_use_the_clone_and_name_real_extras():
    readme = (ROOT / "README.md").read_text("utf-8")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"][
        "optional-dependencies"
    ]
    assert "pip install 'loralab[" not in readme
    named = re.findall(r"pip install (?:-e )?'\.\[(\w+)\]'", readme)
    assert set(named) >= {"bot", "worker", "train", "demo", "dev"}
    assert set(named) <= set(extras)

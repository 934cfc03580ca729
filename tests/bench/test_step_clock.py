"""bench.step_clock times any training script's optimizer steps from outside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

CLOCK = Path(__file__).resolve().parents[2] / "bench" / "step_clock.py"
SCRIPT = """
import sys
import torch
weight = torch.nn.Parameter(torch.ones(4))
optimizer = torch.optim.AdamW([weight], lr=0.1, fused=True)
for _ in range(int(sys.argv[1])):
    weight.sum().backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def test_the_clock_records_each_optimizer_step_and_what_the_run_used(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    result = tmp_path / "clock.json"
    subprocess.run(
        [sys.executable, str(CLOCK), str(result), "--", str(script), "3"],
        check=True,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    figures = json.loads(result.read_text())
    times = figures["step_times"]
    assert len(times) == 3 and times[0] == 0.0 and times == sorted(times)
    assert figures["peak_bytes"] > 0
    assert figures["paths"]["optimizer"] == "torch.optim.adamw.AdamW"
    assert figures["paths"]["fused_optimizer"] is True
    assert figures["paths"]["trained_on"] == "cpu"

"""`kill <demo pid>` (SIGTERM) stops the demo as Ctrl-C does: its cleanup runs, so the
worker it started does not outlive it."""

from __future__ import annotations

import subprocess
import sys

# A demo whose story sends itself SIGTERM; its `finally` is where the real demo stops
# the worker (loralab.demo.runner._run). Run in a child process: without a handler,
# SIGTERM ends the process at once, skipping every `finally`.
PROBE = """
import os, signal, sys
from click.testing import CliRunner
import loralab.demo.runner as runner
from loralab.cli import main

def fake_run_demo(options):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)
    finally:
        print("worker stopped", flush=True)

runner.run_demo = fake_run_demo
before = signal.getsignal(signal.SIGTERM)
result = CliRunner().invoke(main, ["demo", "--dir", sys.argv[1]])
print(result.exit_code, result.output.strip(), signal.getsignal(signal.SIGTERM) == before)
"""


def test_sigterm_runs_the_demos_cleanup(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # CliRunner captures the command's output: the cleanup's line, then the exit message.
    assert out.stdout.splitlines() == ["143 worker stopped", "demo stopped (SIGTERM) True"]

"""`loralab up`: refuses without a token; migrates; runs the bot and a worker per GPU
as child processes and stops them all when one exits."""

from __future__ import annotations

import sys

from click.testing import CliRunner
from sqlalchemy import inspect

from db.session import make_engine
from loralab.cli import main
from loralab.commands import up as up_module
from loralab.commands.up import Child, plan, supervise


def invoke(args: list[str], env: dict[str, str | None]):
    clean = {"DISCORD_TOKEN": None, "LORALAB_DISCORD_TOKEN": None, "DATABASE_URL": None}
    return CliRunner().invoke(main, ["up", *args], env={**clean, **env})


def test_refuses_clearly_without_a_token(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke([], {"LORALAB_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2
    assert "DISCORD_TOKEN is not set" in result.output
    assert "loralab demo" in result.output
    assert not (tmp_path / "home").exists()  # nothing was started or created


def test_migrates_then_supervises_the_bot_and_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "sd15"
    base.mkdir()
    seen: list[list[Child]] = []
    monkeypatch.setattr(up_module, "supervise", lambda children: seen.append(children) or 0)
    result = invoke(
        ["--gpus", "2", "--base-model", f"sd15={base}"],
        {"DISCORD_TOKEN": "x.y.z", "LORALAB_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 0, result.output
    engine = make_engine(f"sqlite:///{tmp_path / 'home' / 'lab.db'}")
    assert {"tickets", "training_jobs", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    [children] = seen
    assert [c.name for c in children] == ["bot", "worker-0", "worker-1"]


def test_plan_gives_each_worker_its_gpu_and_everyone_the_same_home(tmp_path):
    children = plan(home=tmp_path / "lab", gpus=2, base_models={"sd15": "/m/sd15"})
    bot, first, second = children
    assert bot.argv[-1] == "bot"
    assert first.argv[3:] == ["worker", "--queue", "gpu", "--queue", "cpu", "--name", "gpu0"]
    assert second.argv[3:] == ["worker", "--queue", "gpu", "--name", "gpu1"]
    assert (first.env["CUDA_VISIBLE_DEVICES"], second.env["CUDA_VISIBLE_DEVICES"]) == ("0", "1")
    for child in children:
        assert child.env["LORALAB_HOME"] == str((tmp_path / "lab").resolve())
        assert child.env["LORALAB_BASE_MODELS__SD15"] == "/m/sd15"
    [only] = plan(home=tmp_path, gpus=1, base_models={})[1:]
    assert "CUDA_VISIBLE_DEVICES" not in only.env  # one GPU: leave the device alone


def test_when_one_child_exits_the_others_are_stopped(capsys, tmp_path):
    """The sleeper would sleep for an hour: it is stopped with SIGTERM, not waited for.
    The bot exits only once the sleeper has its SIGTERM handler in place."""
    ready, stopped = tmp_path / "ready", tmp_path / "stopped"
    sleeper_script = (
        "import pathlib, signal, sys, time\n"
        "def on_term(*_):\n"
        f"    pathlib.Path({str(stopped)!r}).write_text('SIGTERM')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        f"pathlib.Path({str(ready)!r}).write_text('ready')\n"
        "time.sleep(3600)\n"
    )
    failing_script = (
        "import os, sys, time\n"
        f"while not os.path.exists({str(ready)!r}): time.sleep(0.05)\n"
        "sys.exit(3)\n"
    )
    sleeper = Child("worker-0", [sys.executable, "-c", sleeper_script])
    failing = Child("bot", [sys.executable, "-c", failing_script])
    status = supervise([sleeper, failing], poll=0.1, grace=60)
    assert status == 3
    assert stopped.read_text() == "SIGTERM"  # the sleeper was stopped, not waited for
    out = capsys.readouterr().out
    assert "bot exited with status 3; stopping the rest" in out


def test_workers_never_receive_the_discord_token(tmp_path, monkeypatch):
    """The token is the bot's alone: `up`'s workers run without it in their environment."""
    import dataclasses
    import json

    monkeypatch.setenv("DISCORD_TOKEN", "secret.token.value")
    monkeypatch.setenv("LORALAB_DISCORD_TOKEN", "secret.token.value")
    bot, worker = plan(home=tmp_path, gpus=1, base_models={})
    out = tmp_path / "env.json"
    script = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    probe = dataclasses.replace(worker, argv=[sys.executable, "-c", script])
    assert supervise([probe], poll=0.1, grace=5) == 1  # it exited: `up` stops
    seen = json.loads(out.read_text())
    assert "DISCORD_TOKEN" not in seen and "LORALAB_DISCORD_TOKEN" not in seen
    assert seen["LORALAB_HOME"] == str(tmp_path.resolve())
    assert bot.environment({"DISCORD_TOKEN": "t"})["DISCORD_TOKEN"] == "t"

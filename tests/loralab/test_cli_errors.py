"""Every `loralab` error is one clear line and an exit code; ``-v`` keeps the traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import discord
import sqlalchemy
from click.testing import CliRunner

from loralab.cli import main
from loralab.errors import EXIT_DATABASE, EXIT_DISCORD_AUTH, EXIT_INPUT, describe_error

UNREACHABLE_DB = "postgresql+psycopg://postgres@127.0.0.1:1/nothing"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(
        'pretrained_model_name_or_path = "/m"\ntrain_data_dir = "/d"\noutput_dir = "/o"\n' + text,
        encoding="utf-8",
    )
    return path


def test_a_config_mistake_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", str(_config(tmp_path, "learning_rte = 1\n"))])
    assert result.exit_code == EXIT_INPUT
    lines = result.output.strip().splitlines()
    assert lines == ["Error: unknown key 'learning_rte': use learning_rate instead"]


def test_a_config_mistake_is_reported_before_torch_is_imported(tmp_path: Path) -> None:
    path = _config(tmp_path, "color_aug = true\n")
    probe = (
        "import sys\nfrom click.testing import CliRunner\nfrom loralab.cli import main\n"
        f"r = CliRunner().invoke(main, ['train', {str(path)!r}])\n"
        "print(r.exit_code, 'torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["1", "False"]


def test_an_unreachable_database_is_one_line_and_v_shows_the_traceback() -> None:
    env = {"LORALAB_DATABASE_URL": UNREACHABLE_DB, "DATABASE_URL": None}
    result = CliRunner().invoke(main, ["db", "current"], env=env)
    assert result.exit_code == EXIT_DATABASE
    assert "Traceback" not in result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith("Error: cannot use the database (DATABASE_URL): connection failed")
    )
    verbose = CliRunner().invoke(main, ["-v", "db", "current"], env=env)
    assert isinstance(verbose.exception, sqlalchemy.exc.OperationalError)


def test_discord_refusals_say_what_to_do() -> None:
    login = describe_error(discord.LoginFailure("Improper token has been passed."))
    assert login is not None and login.exit_code == EXIT_DISCORD_AUTH
    assert "DISCORD_TOKEN" in login.message
    intents = describe_error(discord.PrivilegedIntentsRequired(None))
    assert intents is not None and "Privileged Gateway Intents" in intents.message
    unreachable = describe_error(ConnectionRefusedError("gateway"))
    assert unreachable is not None and "network" in unreachable.message
    assert describe_error(KeyError("a bug")) is None  # a bug keeps its traceback


def test_invite_url_with_a_malformed_token_says_so() -> None:
    env = {"DISCORD_TOKEN": "not-a-token", "LORALAB_DISCORD_TOKEN": None}
    env |= {"DISCORD_APPLICATION_ID": None, "LORALAB_DISCORD_APPLICATION_ID": None}
    result = CliRunner().invoke(main, ["invite-url"], env=env)
    assert result.exit_code == 2
    assert "DISCORD_TOKEN is set but is not a bot token" in result.output

"""`loralab invite-url`: the OAuth2 link with the bot's permissions and scopes."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

import discord
from click.testing import CliRunner

from loralab.cli import main
from loralab.commands.invite import PERMISSIONS, application_id_from_token

APP_ID = 1234567890123456789


def token_for(app_id: int) -> str:
    first = base64.b64encode(str(app_id).encode()).decode().rstrip("=")
    return f"{first}.GhIjKl.{'x' * 38}"


def run(args: list[str], env: dict[str, str | None]) -> tuple[int, str]:
    clean = {"DISCORD_TOKEN": None, "LORALAB_DISCORD_TOKEN": None, "DISCORD_APPLICATION_ID": None}
    result = CliRunner().invoke(main, ["invite-url", *args], env={**clean, **env})
    return result.exit_code, result.output


def query(output: str) -> dict[str, list[str]]:
    url = urlparse(output.splitlines()[0])
    assert (url.scheme, url.netloc, url.path) == ("https", "discord.com", "/oauth2/authorize")
    return parse_qs(url.query)


def test_the_link_has_the_scopes_and_every_permission_the_bot_uses():
    code, output = run(["--application-id", str(APP_ID)], {})
    assert code == 0
    q = query(output)
    assert q["client_id"] == [str(APP_ID)]
    assert q["scope"] == ["bot applications.commands"]
    granted = discord.Permissions(int(q["permissions"][0]))
    for name in PERMISSIONS:
        assert getattr(granted, name), name
    for needed in ("manage_roles", "manage_channels", "send_messages_in_threads", "attach_files"):
        assert getattr(granted, needed)
    assert not granted.administrator  # nothing beyond what the bot does


def test_the_application_id_comes_from_the_token():
    assert application_id_from_token(token_for(APP_ID)) == APP_ID
    assert application_id_from_token("not-a-token") is None
    code, output = run([], {"DISCORD_TOKEN": token_for(APP_ID)})
    assert code == 0 and query(output)["client_id"] == [str(APP_ID)]


def test_the_setting_wins_over_the_token():
    code, output = run([], {"DISCORD_APPLICATION_ID": "42", "DISCORD_TOKEN": token_for(APP_ID)})
    assert code == 0 and query(output)["client_id"] == ["42"]


def test_without_an_id_it_says_where_to_find_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env here
    code, output = run([], {})
    assert code == 2
    assert "--application-id" in output and "DISCORD_TOKEN" in output


def test_explain_lists_why_each_permission_is_asked(tmp_path):
    code, output = run(["--application-id", "42", "--explain"], {})
    assert code == 0
    for name in PERMISSIONS:
        assert name in output

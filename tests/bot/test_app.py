"""How `create_bot` builds the bot from its settings (point 8 of the Discord boundary)."""

from __future__ import annotations

import pytest

from bot.app import create_bot
from lab.settings import DISCORD_ATTACHMENT_HOSTS, BotSettings
from tests.bot.conftest import RecordingTaskSender


def build(tmp_path, **settings):
    return create_bot(
        BotSettings(home=tmp_path, **settings),
        session_factory=None,  # type: ignore[arg-type]  (never touched here)
        task_sender=RecordingTaskSender(),
        sync_commands=False,
    )


def test_the_attachment_hosts_are_a_setting_defaulting_to_discords(tmp_path, monkeypatch):
    assert build(tmp_path).attachment_hosts == DISCORD_ATTACHMENT_HOSTS
    monkeypatch.setenv("LORALAB_ATTACHMENT_HOSTS", '["media.proxy.example"]')
    assert build(tmp_path).attachment_hosts == frozenset({"media.proxy.example"})


def test_the_bot_takes_no_http_session_it_would_not_use(tmp_path):
    with pytest.raises(TypeError, match="http_session"):
        create_bot(
            BotSettings(home=tmp_path),
            session_factory=None,  # type: ignore[arg-type]
            task_sender=RecordingTaskSender(),
            http_session=object(),
        )


def test_long_rate_limits_are_not_slept_through(tmp_path):
    """Point 7: past this wait discord.py raises `RateLimited`; the relay postpones."""
    assert build(tmp_path).http.max_ratelimit_timeout == 30.0
    assert build(tmp_path, rate_limit_max_wait_seconds=45).http.max_ratelimit_timeout == 45.0
    with pytest.raises(ValueError, match="greater than or equal to 30"):
        BotSettings(home=tmp_path, rate_limit_max_wait_seconds=5)


def test_a_rate_limit_a_command_meets_is_explained_not_an_incident():
    """With `max_ratelimit_timeout` a command may meet `RateLimited` (not slept through)."""
    import discord

    from bot.errors import describe

    text, expected = describe(discord.RateLimited(42.0))
    assert expected and text == "Discord is rate limiting the lab for 42 s; try again then."

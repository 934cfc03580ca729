"""Point 5: the command metadata Discord receives (the synced payload)."""

from __future__ import annotations

import discord
import pytest

from tests.bot.conftest import followup_text, running_lab
from tests.bot.matrix_setup import members

pytestmark = pytest.mark.anyio


def synced(lab) -> list[dict]:
    """The commands in the bot's last sync, as Discord received them."""
    puts = [
        r
        for r in lab.env.http_requests
        if r.method == "PUT" and r.path.endswith("/commands") and isinstance(r.json, list)
    ]
    assert puts, "the bot synced no commands"
    return puts[-1].json


def options_of(command: dict, path: str = ""):
    for option in command.get("options", []):
        where = f"{path} {option['name']}".strip()
        if option["type"] in (1, 2):  # a subcommand (group): its own options
            yield from options_of(option, where)
        else:
            yield where, option


async def test_every_command_is_guild_only_and_every_option_is_described(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        commands = synced(lab)
        assert {c["name"] for c in commands} >= {"lab", "lora", "dataset", "caption", "train"}
        for command in commands:
            assert command.get("contexts") == [0], command["name"]  # guild only, never DMs
            for where, option in options_of(command):
                text = option["description"]
                assert text and text != "…" and len(text) > 8, f"/{command['name']} {where}"


async def test_the_admin_commands_are_hidden_from_members(tmp_path, template_db):
    manage_guild = discord.Permissions(manage_guild=True).value
    async with running_lab(tmp_path, template_db) as lab:
        permissions = {c["name"]: c.get("default_member_permissions") for c in synced(lab)}
        assert int(permissions.pop("lab")) == manage_guild
        assert set(permissions.values()) == {None}  # everything else: for everyone
        await lab.setup()
        people = members(lab)
        assert "lab setup" in lab.admin.available_commands(lab.general)
        for role in ("nobody", "trainer", "tester"):
            seen = people[role].available_commands(lab.general)
            assert "lab setup" not in seen and "lab config" not in seen, role
            assert {"lora request", "lora stats", "train workers"} <= set(seen), role
        stats = await people["nobody"].slash(lab.general, "lora stats")
        shown = stats.followups[-1] if stats.followups else stats.response
        assert shown.embeds[0].title == "Lab contributions"
        assert "No workers" in followup_text(
            await people["nobody"].slash(lab.general, "train workers")
        )

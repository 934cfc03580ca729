"""The invite link's permissions are enough: the bot, holding exactly those (and not
the broad set simcord gives a bot by default), sets the lab up and runs a ticket to
the job board."""

from __future__ import annotations

import pytest

from loralab.commands.invite import permissions_value
from tests.bot.conftest import followup_text, open_request, ready_ticket, running_lab

pytestmark = pytest.mark.anyio


def restrict_bot_to_invite_permissions(lab) -> int:
    backend = lab.env.backend
    guild = backend.guilds[lab.guild.id]
    [role] = [r for r in guild.roles.values() if r.managed]
    backend.edit_role(lab.guild.id, role.id, {"permissions": permissions_value()})
    return role.id


async def test_setup_and_a_ticket_work_with_only_the_invite_permissions(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        role_id = restrict_bot_to_invite_permissions(lab)
        guild = lab.bot.get_guild(lab.guild.id)
        everyone = guild.default_role.permissions.value
        assert guild.me.guild_permissions.value == permissions_value() | everyone
        assert [r.permissions.value for r in guild.me.roles if r.id == role_id] == [
            permissions_value()
        ]
        await lab.setup()  # roles, the forum with tags, channels, pinned guides
        assert "Captioner" in followup_text(
            await lab.member("cap").slash(lab.general, "role join", role="captioner")
        )
        thread = await open_request(lab, lab.member("rita"))
        assert thread.history()[0].embeds[0].title == "Ticket #1 Aria"
        await ready_ticket(lab, lab.member("ria"))
        assert "Claim" in str(lab.channel("job-board").last_message.components)
        pinned = lab.channel("lab-guide").pinned_messages()
        assert pinned, "the guides were not pinned"

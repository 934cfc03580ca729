"""`/lab setup`, roles and requests, seen from the members' side."""

from __future__ import annotations

import pytest

from tests.bot.conftest import followup_text, running_lab

pytestmark = pytest.mark.anyio


async def test_setup_creates_the_lab_once(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        channels = set(lab.guild.channels)
        assert {"lab-requests", "job-board", "testing", "releases", "lab-guide"} <= channels
        assert {"Lab Admin", "Trainer", "Tester", "Captioner", "Dataset Curator"} <= set(
            lab.guild.roles
        )
        guide = lab.channel("lab-guide")
        assert len(guide.pinned_messages()) == 5
        again = await lab.admin.slash(lab.general, "lab setup")
        assert "nothing" in followup_text(again)
        assert set(lab.guild.channels) == channels
        assert len(lab.channel("lab-guide").history()) == len(guide.history())


async def test_setup_locks_the_lab_channels(tmp_path, template_db):
    """Point 6: #lab-guide, #releases and #job-board are the bot's to write; members
    reply in ticket posts but open them only through /lora request."""
    from simcord.backend.errors import BackendError

    from tests.bot.conftest import open_request

    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        member = lab.member("mia", "Trainer", "Tester")
        for name in ("lab-guide", "releases", "job-board"):
            with pytest.raises(BackendError, match="Missing Permissions"):
                await member.send(lab.channel(name), "hello")
        thread = await open_request(lab, member)  # the bot still posts in the forum
        await member.send(thread, "Here are some references.")
        assert thread.last_message.content == "Here are some references."

        guild = lab.bot.get_guild(lab.guild.id)
        forum = guild.get_channel(lab.channel("lab-requests").id)
        as_member = forum.permissions_for(await guild.fetch_member(member.id))
        assert not as_member.send_messages  # in a forum: may not create posts
        assert as_member.send_messages_in_threads
        for name in ("lab-guide", "releases", "job-board", "lab-requests"):
            channel = guild.get_channel(lab.channel(name).id)
            assert channel.permissions_for(guild.me).send_messages, name
        admin = lab.member("ada", "Lab Admin")
        await admin.send(lab.channel("lab-guide"), "Welcome, everyone.")

        again = await lab.admin.slash(lab.general, "lab setup")
        assert "nothing" in followup_text(again)  # the overwrites are already in place

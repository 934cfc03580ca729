"""What the bot's posts actually notify, read from simcord's server-side record of each
message: member text pings no one, the lab's roles are not mentionable, masked links
from members are shown as plain text, and the claiming trainer is pinged by id when
their job ends (issue 14, point 1)."""

from __future__ import annotations

from typing import Any

import pytest

from lab.lifecycle import TicketState
from tests.bot.conftest import followup_text, running_lab
from tests.bot.matrix_setup import members, ticket_in
from tests.bot.worker_sim import finish_training

pytestmark = pytest.mark.anyio


def stored(lab: Any, message: Any) -> Any:
    """The message as the (simulated) server keeps it: who it pinged."""
    return lab.env.backend.get_message(message.channel.id, message.id)


async def test_member_text_in_public_posts_pings_no_one(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        admin_role = lab.guild.roles["Lab Admin"]
        victim = people["tester"]
        number = ticket_in(lab, people, TicketState.REVIEW)
        await lab.relay()
        reason = (
            f"@everyone @here <@&{admin_role.id}> <@{victim.id}> see "
            "[the guide](https://evil.example/steal)"
        )
        asked = await people["requester"].slash(
            lab.general, "dataset request-changes", ticket=number, reason=reason
        )
        assert "Changes requested" in followup_text(asked)
        await lab.relay()
        thread = lab.channel("lab-requests").threads[-1]
        notice = stored(lab, thread.last_message)
        assert notice.mention_everyone is False
        assert notice.ping_user_ids == [] and notice.ping_role_ids == []
        assert "see the guide (https://evil.example/steal)" in notice.content
        assert "[the guide]" not in notice.content


async def test_lab_roles_are_not_mentionable(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        existing = lab.guild.create_role("Trainer", mentionable=True)
        await lab.setup()
        roles = lab.env.backend.get_guild(lab.guild.id).roles
        for name in ("Dataset Curator", "Captioner", "Trainer", "Tester", "Lab Admin"):
            role = next(r for r in roles.values() if r.name == name)
            assert role.mentionable is False, name
        assert existing.id in roles


async def test_the_claiming_trainer_is_pinged_when_their_job_ends(tmp_path, template_db):
    async with running_lab(tmp_path, template_db) as lab:
        await lab.setup()
        people = members(lab)
        ticket_in(lab, people, TicketState.TRAINING)
        await lab.relay()
        job_id = lab.tasks.sent[-1]["payload"]["job_id"]
        finish_training(lab.factory, lab.storage, job_id, lab.bot.rules)
        await lab.relay()
        thread = lab.channel("lab-requests").threads[-1]
        finished = next(
            m for m in reversed(thread.history()) if "finished. Saved epochs" in m.content
        )
        record = stored(lab, finished)
        assert record.ping_user_ids == [people["claimer"].id]
        assert record.ping_role_ids == [] and record.mention_everyone is False

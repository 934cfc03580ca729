"""The #job-board Claim button (persistent: the job id lives in its custom id)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord

from bot.components import guarded, outbox_written
from bot.context import acting
from db.refs import TicketRef
from db.tickets import act
from lab.lifecycle import Action

if TYPE_CHECKING:
    from bot.app import LabBot


class ClaimButton(discord.ui.DynamicItem[discord.ui.Button], template=r"lora:claim:(?P<job>\d+)"):
    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Claim",
                emoji="🛠️",
                style=discord.ButtonStyle.success,
                custom_id=f"lora:claim:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> ClaimButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: LabBot = interaction.client  # type: ignore[assignment]

        async def work() -> None:
            _, who = await acting(bot, interaction)
            ref = TicketRef(who.guild_id, job_id=self.job_id)
            await bot.db.run(act, who, ref, Action.CLAIM, bot.rules)
            outbox_written(bot)
            await interaction.followup.send(
                "You claimed this job. In the ticket's post: set the parameters with "
                "/train config, then /train start.",
                ephemeral=True,
            )

        await guarded(interaction, work)

"""`/test prompts`: ask the workers for more samples."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.components import outbox_written
from bot.context import TICKET_HELP, acting, ticket_ref
from bot.errors import BotError
from db.voting import request_samples

if TYPE_CHECKING:
    from bot.app import LabBot


@app_commands.guild_only()
class Testing(commands.GroupCog, group_name="test", group_description="Test a trained LoRA"):
    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    @app_commands.command(name="prompts", description="More samples with your prompts")
    @app_commands.describe(ticket=TICKET_HELP)
    @app_commands.describe(prompts="Prompts separated by | (the trigger word is added if missing)")
    async def prompts(
        self, interaction: discord.Interaction, prompts: str, ticket: int | None = None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        wanted = [p.strip() for p in prompts.split("|") if p.strip()]
        if not wanted or len(wanted) > 8:
            raise BotError("Give 1 to 8 prompts separated by |.")
        sample_set = await self.bot.db.run(request_samples, who, ref, wanted, self.bot.rules)
        outbox_written(self.bot)
        await interaction.followup.send(
            f"Asked the workers for sample set {sample_set} ({len(wanted)} prompts); the grid "
            "is posted here when it is ready.",
            ephemeral=True,
        )

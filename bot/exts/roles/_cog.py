"""`/role join|leave`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.context import ROLE_NAMES, SELF_SERVICE_ROLES, require_lab
from bot.exts.roles._logic import self_service_role
from bot.exts.roles._views import toggle_role

if TYPE_CHECKING:
    from bot.app import LabBot

ROLE_CHOICES = [app_commands.Choice(name=ROLE_NAMES[r], value=r.value) for r in SELF_SERVICE_ROLES]


@app_commands.guild_only()
class Roles(commands.GroupCog, group_name="role", group_description="Join or leave lab roles"):
    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    async def _toggle(self, interaction: discord.Interaction, role: str, join: bool) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        config = await require_lab(self.bot, interaction.guild_id)
        text = await toggle_role(interaction, config, self_service_role(role), join=join)
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="join", description="Take a lab role")
    @app_commands.describe(role="The lab role to take")
    @app_commands.choices(role=ROLE_CHOICES)
    async def join(self, interaction: discord.Interaction, role: str) -> None:
        await self._toggle(interaction, role, True)

    @app_commands.command(name="leave", description="Give up a lab role")
    @app_commands.describe(role="The lab role to give up")
    @app_commands.choices(role=ROLE_CHOICES)
    async def leave(self, interaction: discord.Interaction, role: str) -> None:
        await self._toggle(interaction, role, False)

"""The role picker: one persistent toggle button per self-service lab role."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord

from bot.components import guarded
from bot.context import ROLE_NAMES, SELF_SERVICE_ROLES, require_lab
from bot.exts.roles._logic import toggle_role
from lab.lifecycle import LabRole

if TYPE_CHECKING:
    from bot.app import LabBot


class RoleButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"lora:role:(?P<role>curator|captioner|trainer|tester)",
):
    def __init__(self, role: LabRole) -> None:
        super().__init__(
            discord.ui.Button(
                label=ROLE_NAMES[role],
                style=discord.ButtonStyle.secondary,
                custom_id=f"lora:role:{role.value}",
            )
        )
        self.role = role

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> RoleButton:
        return cls(LabRole(match["role"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: LabBot = interaction.client  # type: ignore[assignment]

        async def work() -> None:
            config = await require_lab(bot, interaction.guild_id)
            text = await toggle_role(interaction, config, self.role, join=None)
            await interaction.followup.send(text, ephemeral=True)

        await guarded(interaction, work)


def role_picker_view() -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for role in SELF_SERVICE_ROLES:
        view.add_item(RoleButton(role))
    return view

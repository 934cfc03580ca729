"""The role picker: one persistent toggle button per self-service lab role, and the
Discord side of joining or leaving a role (`/role join|leave` uses it too)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord

from bot.components import guarded
from bot.context import ROLE_NAMES, SELF_SERVICE_ROLES, LabConfig, require_lab
from bot.errors import NotAllowed
from bot.exts.roles._logic import role_change, self_service_role
from lab.lifecycle import LabRole

if TYPE_CHECKING:
    from bot.app import LabBot


async def toggle_role(
    interaction: discord.Interaction, config: LabConfig, role: LabRole, *, join: bool | None
) -> str:
    """Give or take the member's lab `role` (``join=None`` toggles); returns the reply.
    Only a self-assignable role is ever given or taken here."""
    role = self_service_role(role.value)
    member = interaction.user
    guild = interaction.guild
    if not isinstance(member, discord.Member) or guild is None:
        raise NotAllowed("Roles exist only inside the lab's server.")
    role_id = config.role_id(role)
    discord_role = guild.get_role(role_id) if role_id else None
    if discord_role is None:
        raise NotAllowed(
            f"The {ROLE_NAMES[role]} role is missing; a Lab Admin runs /lab setup to restore it."
        )
    give, reply = role_change(
        ROLE_NAMES[role],
        has=discord_role in member.roles,
        join=join,
        approval_only=role in config.approval_roles,
        manages_server=member.guild_permissions.manage_guild,
    )
    if give is True:
        await member.add_roles(discord_role, reason="LoRA Lab role picker")
    elif give is False:
        await member.remove_roles(discord_role, reason="LoRA Lab role picker")
    return reply


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

"""Joining and leaving lab roles (the Discord role is the source of truth)."""

from __future__ import annotations

import discord

from bot.context import ROLE_NAMES, LabConfig
from bot.errors import NotAllowed
from lab.lifecycle import LabRole


async def toggle_role(
    interaction: discord.Interaction, config: LabConfig, role: LabRole, *, join: bool | None
) -> str:
    """Give or take the member's lab `role` (``join=None`` toggles); returns the reply."""
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
    has = discord_role in member.roles
    want = (not has) if join is None else join
    if want == has:
        return f"You {'already have' if has else 'do not have'} the {ROLE_NAMES[role]} role."
    if want and role in config.approval_roles and not member.guild_permissions.manage_guild:
        raise NotAllowed(
            f"{ROLE_NAMES[role]} is approval-only in this lab: ask a Lab Admin to give it to you."
        )
    if want:
        await member.add_roles(discord_role, reason="LoRA Lab role picker")
        return f"You are now a {ROLE_NAMES[role]}."
    await member.remove_roles(discord_role, reason="LoRA Lab role picker")
    return f"You left the {ROLE_NAMES[role]} role."

"""Who is acting and in which lab: built from an interaction, checked against setup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import NotAllowed, NotSetUp
from db.refs import TicketRef
from db.tickets import Who, guild_config
from lab.lifecycle import LabRole

if TYPE_CHECKING:
    from bot.app import LabBot

ROLE_NAMES: dict[LabRole, str] = {
    LabRole.ADMIN: "Lab Admin",
    LabRole.CURATOR: "Dataset Curator",
    LabRole.CAPTIONER: "Captioner",
    LabRole.TRAINER: "Trainer",
    LabRole.TESTER: "Tester",
}
SELF_SERVICE_ROLES = (LabRole.CURATOR, LabRole.CAPTIONER, LabRole.TRAINER, LabRole.TESTER)
TICKET_HELP = "The ticket's number (default: the ticket of the post you are in)"
"""The description of every command's ``ticket`` option (`ticket_here` resolves it)."""
# A Trainer claims jobs and holds a GPU for hours: by default a Lab Admin grants the
# role (a brand-new account cannot take it); `/lab config approval_only:` opens it.
DEFAULT_APPROVAL_ROLES = (LabRole.TRAINER.value,)


@dataclass(frozen=True, slots=True)
class LabConfig:
    """The ids `/lab setup` created, as stored in the guild's config."""

    raw: dict[str, Any]

    def role_id(self, role: LabRole) -> int | None:
        value = self.raw.get("roles", {}).get(role.value)
        return int(value) if value else None

    def channel_id(self, name: str) -> int | None:
        value = self.raw.get("channels", {}).get(name)
        return int(value) if value else None

    def tag_id(self, state: str) -> int | None:
        value = self.raw.get("tags", {}).get(state)
        return int(value) if value else None

    @property
    def approval_roles(self) -> frozenset[LabRole]:
        """Roles a member cannot take themselves; Trainer unless an admin opened it."""
        chosen = self.raw.get("approval_roles", DEFAULT_APPROVAL_ROLES)
        return frozenset(LabRole(r) for r in chosen)

    @property
    def ready(self) -> bool:
        return bool(self.raw.get("channels"))


async def lab_config(bot: LabBot, guild_id: int) -> LabConfig:
    """The guild's lab config (cached; `/lab setup` refreshes the cache)."""
    cached = bot.lab_configs.get(guild_id)
    if cached is None:
        cached = LabConfig(await bot.db.run(guild_config, guild_id))
        if cached.ready:
            bot.lab_configs[guild_id] = cached
    return cached


async def require_lab(bot: LabBot, guild_id: int | None) -> LabConfig:
    if guild_id is None:
        raise NotAllowed("LoRA Lab works inside a server, not in direct messages.")
    config = await lab_config(bot, guild_id)
    if not config.ready:
        raise NotSetUp()
    return config


def lab_roles(member: discord.Member | discord.User, config: LabConfig) -> frozenset[LabRole]:
    """The lab roles a member holds: their Discord roles, and Lab Admin for anyone
    who may manage the server."""
    if not isinstance(member, discord.Member):
        return frozenset()
    held = {role.id for role in member.roles}
    roles = {r for r in LabRole if (rid := config.role_id(r)) is not None and rid in held}
    if member.guild_permissions.manage_guild:
        roles.add(LabRole.ADMIN)
    return frozenset(roles)


def who_from(interaction: discord.Interaction, config: LabConfig | None) -> Who:
    user = interaction.user
    guild = interaction.guild
    assert interaction.guild_id is not None
    return Who(
        guild_id=interaction.guild_id,
        user_id=user.id,
        name=user.display_name,
        roles=lab_roles(user, config) if config else frozenset(),
        guild_name=guild.name if guild else "",
    )


async def acting(bot: LabBot, interaction: discord.Interaction) -> tuple[LabConfig, Who]:
    """The lab and the acting member; raises `NotSetUp` before /lab setup."""
    config = await require_lab(bot, interaction.guild_id)
    return config, who_from(interaction, config)


def require_role(who: Who, role: LabRole, doing: str) -> None:
    """Guild-level actions (no ticket yet) checked by role, with a clear refusal."""
    if role not in who.roles and LabRole.ADMIN not in who.roles:
        raise NotAllowed(f"Only a {ROLE_NAMES[role]} may {doing}.")


def ticket_ref(interaction: discord.Interaction, number: int | None) -> TicketRef:
    """The ticket a command is about: the `ticket` option, else the post it runs in.
    The service resolves it in its own transaction (no look-up of its own here)."""
    assert interaction.guild_id is not None
    return TicketRef(interaction.guild_id, number=number, thread_id=interaction.channel_id)

"""`/lab setup` (idempotent), `/lab config`, `/lab outbox` and `/lab redrive`: the admin
commands (`/lora stats` and `/train workers` are for everyone)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.components import outbox_written
from bot.context import (
    DEFAULT_APPROVAL_ROLES,
    ROLE_NAMES,
    SELF_SERVICE_ROLES,
    LabConfig,
    acting,
    lab_config,
    who_from,
)
from bot.embeds import clip
from bot.errors import BotError, NotAllowed
from bot.exts.lab._logic import (
    BOT_CAN,
    GUIDES,
    REQUESTS_FORUM,
    STATUS_TAGS,
    TEXT_CHANNELS,
    overwrites_for,
)
from bot.exts.roles._views import role_picker_view
from db.outbox import dead_letters, redrive
from db.tickets import save_guild_config
from lab.lifecycle import LabRole
from lab.limits import LIMIT_NAMES, set_limit

if TYPE_CHECKING:
    from bot.app import LabBot

log = logging.getLogger(__name__)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Lab(commands.GroupCog, group_name="lab", group_description="Set up and look after the lab"):
    """Admin commands only: Discord shows a group to members with *Manage Server*
    (``default_member_permissions`` is sent per top-level command, not per
    subcommand); a server may open it to the Lab Admin role under Integrations."""

    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    @app_commands.command(name="setup", description="Create the lab's roles and channels")
    async def setup_(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild = interaction.guild
        if guild is None:
            raise NotAllowed("Run /lab setup inside the server that will host the lab.")
        existing = await lab_config(self.bot, guild.id)
        who = who_from(interaction, existing)
        if LabRole.ADMIN not in who.roles:
            raise NotAllowed(
                "Only a Lab Admin (or someone who may manage this server) may set up the lab."
            )
        created: list[str] = []
        config: dict[str, Any] = dict(existing.raw)
        config["roles"] = await self._roles(guild, config.get("roles", {}), created)
        forum, tags = await self._forum(guild, config.get("channels", {}), created)
        channels = {"requests": forum.id}
        for key, (name, topic) in TEXT_CHANNELS.items():
            channels[key] = (
                await self._text(guild, config.get("channels", {}).get(key), name, topic, created)
            ).id
        config["channels"] = channels
        config["tags"] = tags
        await self._lock(guild, channels, config["roles"], created)
        config["guide_messages"] = await self._guides(guild, channels["guide"], config, created)
        config.setdefault("approval_roles", list(DEFAULT_APPROVAL_ROLES))
        await self.bot.db.run(save_guild_config, guild.id, guild.name, config)
        self.bot.lab_configs[guild.id] = LabConfig(config)
        summary = ", ".join(created) if created else "nothing: everything was already in place"
        await interaction.followup.send(
            clip(f"Lab setup done. Created {summary}.", 2000), ephemeral=True
        )

    async def _roles(
        self, guild: discord.Guild, known: dict[str, int], created: list[str]
    ) -> dict[str, int]:
        ids: dict[str, int] = {}
        for role, name in ROLE_NAMES.items():
            found = guild.get_role(int(known.get(role.value, 0))) or discord.utils.get(
                guild.roles, name=name
            )
            if found is None:
                found = await guild.create_role(
                    name=name, mentionable=False, reason="LoRA Lab setup"
                )
                created.append(f"role {name}")
            elif found.mentionable:
                # Any member may write @Trainer; the lab's roles are not a ping list.
                await found.edit(mentionable=False, reason="LoRA Lab setup")
            ids[role.value] = found.id
        return ids

    async def _forum(
        self, guild: discord.Guild, known: dict[str, int], created: list[str]
    ) -> tuple[discord.ForumChannel, dict[str, int]]:
        forum = guild.get_channel(int(known.get("requests", 0)))
        if not isinstance(forum, discord.ForumChannel):
            forum = discord.utils.get(guild.forums, name=REQUESTS_FORUM)
        if forum is None:
            forum = await guild.create_forum(
                REQUESTS_FORUM, topic="One post per LoRA request.", reason="LoRA Lab setup"
            )
            created.append(f"#{REQUESTS_FORUM}")
        have = {tag.name: tag for tag in forum.available_tags}
        missing = [name for name in STATUS_TAGS.values() if name not in have]
        if missing:
            tags = [*forum.available_tags, *(discord.ForumTag(name=n) for n in missing)]
            forum = await forum.edit(available_tags=tags)
            created.append(f"{len(missing)} status tags")
            have = {tag.name: tag for tag in forum.available_tags}
        return forum, {state: have[name].id for state, name in STATUS_TAGS.items()}

    async def _text(
        self, guild: discord.Guild, known: int | None, name: str, topic: str, created: list[str]
    ) -> discord.TextChannel:
        channel = guild.get_channel(int(known or 0))
        if not isinstance(channel, discord.TextChannel):
            channel = discord.utils.get(guild.text_channels, name=name)
        if channel is None:
            channel = await guild.create_text_channel(name, topic=topic, reason="LoRA Lab setup")
            created.append(f"#{name}")
        return channel

    async def _lock(
        self,
        guild: discord.Guild,
        channels: dict[str, int],
        roles: dict[str, int],
        created: list[str],
    ) -> None:
        """Overwrites per lab channel (`_logic.overwrites_for`); existing ones of other
        roles are kept, and a rerun changes only what differs."""
        admins = guild.get_role(int(roles.get(LabRole.ADMIN.value, 0)))
        for key, channel_id in channels.items():
            wanted = overwrites_for(key)
            channel = guild.get_channel(channel_id)
            if wanted is None or channel is None:
                continue
            members, admin_rights = wanted
            targets: list[tuple[discord.Role | discord.Member, dict[str, bool]]] = [
                (guild.me, BOT_CAN),  # first: the @everyone deny must not lock the bot out
                (guild.default_role, members),
            ]
            if admins is not None:
                targets.append((admins, admin_rights))
            changed = False
            for target, rights in targets:
                current = channel.overwrites_for(target)
                kept = {name: value for name, value in current if value is not None}
                overwrite = discord.PermissionOverwrite(**{**kept, **rights})
                if current != overwrite:
                    await channel.set_permissions(
                        target, overwrite=overwrite, reason="LoRA Lab setup"
                    )
                    changed = True
            if changed:
                created.append(f"permissions of #{channel.name}")

    async def _guides(
        self, guild: discord.Guild, channel_id: int, config: dict[str, Any], created: list[str]
    ) -> dict[str, int]:
        channel = guild.get_channel(channel_id)
        assert isinstance(channel, discord.TextChannel)
        posted: dict[str, int] = dict(config.get("guide_messages", {}))
        for title, text in GUIDES.items():
            if title in posted:
                continue
            message = await channel.send(text)
            await message.pin(reason="LoRA Lab guide")
            posted[title] = message.id
            created.append(f"guide '{title}'")
        if "role_picker" not in posted:
            message = await channel.send(
                "**Pick your lab roles** (press again to leave one):", view=role_picker_view()
            )
            posted["role_picker"] = message.id
            created.append("role picker")
        return posted

    @app_commands.command(name="config", description="Change a lab rule or limit")
    @app_commands.describe(
        approval_only="A role members cannot take themselves (press again to open it)",
        limit="A per-member limit to set (see docs/guides/admin.md)",
        value="The new value of that limit",
    )
    @app_commands.choices(
        approval_only=[
            app_commands.Choice(name=ROLE_NAMES[r], value=r.value) for r in SELF_SERVICE_ROLES
        ],
        limit=[app_commands.Choice(name=name, value=name) for name in LIMIT_NAMES],
    )
    async def config_(
        self,
        interaction: discord.Interaction,
        approval_only: str | None = None,
        limit: str | None = None,
        value: app_commands.Range[int, 1, 1_000_000] | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        config, who = await acting(self.bot, interaction)
        if LabRole.ADMIN not in who.roles:
            raise NotAllowed("Only a Lab Admin may change the lab's configuration.")
        if (limit is None) != (value is None) or (limit is None) == (approval_only is None):
            raise BotError("Give approval_only, or a limit with its value.")
        lines: list[str] = []
        raw = dict(config.raw)
        if approval_only is not None:
            roles = {r.value for r in config.approval_roles}
            roles ^= {approval_only}
            raw["approval_roles"] = sorted(roles)
            state = "approval-only" if approval_only in roles else "open to everyone"
            lines.append(f"{ROLE_NAMES[LabRole(approval_only)]} is now {state}.")
        if limit is not None and value is not None:
            raw["limits"] = set_limit(raw, limit, value)
            lines.append(f"{limit} is now {value:,}.")
        assert interaction.guild_id is not None
        await self.bot.db.run(save_guild_config, interaction.guild_id, who.guild_name, raw)
        self.bot.lab_configs[interaction.guild_id] = LabConfig(raw)
        await interaction.followup.send("\n".join(lines), ephemeral=True)

    @app_commands.command(name="outbox", description="Messages the lab gave up on, and why")
    async def outbox_(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        if LabRole.ADMIN not in who.roles:
            raise NotAllowed("Only a Lab Admin may look at the lab's undelivered messages.")
        letters = await self.bot.db.run(
            dead_letters, self.bot.relay_policy, limit=20, guild_id=who.guild_id
        )
        lines = [
            f"`{d.id}` {d.kind.removeprefix('discord.')} · ticket {d.ticket_id} · {d.reason}"
            for d in letters
        ]
        text = "\n".join(lines) + "\nFix the cause, then `/lab redrive id:<n>`." if lines else ""
        await interaction.followup.send(
            clip(text or "Nothing undelivered: every message went out.", 2000), ephemeral=True
        )

    @app_commands.command(name="redrive", description="Send a message the lab gave up on again")
    @app_commands.describe(id="The number /lab outbox shows before it")
    async def redrive_(self, interaction: discord.Interaction, id: int) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        if LabRole.ADMIN not in who.roles:
            raise NotAllowed("Only a Lab Admin may re-send the lab's messages.")
        done = await self.bot.db.run(redrive, [id], self.bot.relay_policy, guild_id=who.guild_id)
        if not done:
            raise NotAllowed(f"`{id}` is not one of this lab's undelivered messages (/lab outbox).")
        outbox_written(self.bot)
        await interaction.followup.send(f"`{id}` goes out again now.", ephemeral=True)

"""`/lora request|status|list|cancel|release|iterate|stats`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import embeds
from bot.components import guarded, open_modal, outbox_written, submitted
from bot.context import TICKET_HELP, acting, require_lab, ticket_ref
from bot.embeds import stats_embed
from bot.exts.tickets._views import REQUEST_MODAL, RequestModal, submit_request
from db.models import SubjectKind
from db.stats import leaderboard, ticket_counts
from db.tickets import act, iterate, list_tickets, ticket_card
from lab.families import NAMED_BASES
from lab.lifecycle import Action, TicketState

if TYPE_CHECKING:
    from bot.app import LabBot

KINDS = [app_commands.Choice(name=k.value, value=k.value) for k in SubjectKind]
BASES = [app_commands.Choice(name=b, value=b) for b in NAMED_BASES]
STATES = [app_commands.Choice(name=s.value.upper(), value=s.value) for s in TicketState]


@app_commands.guild_only()
class Lora(commands.GroupCog, group_name="lora", group_description="LoRA requests"):
    def __init__(self, bot: LabBot) -> None:
        self.bot = bot

    @app_commands.command(name="request", description="Ask the lab for a new LoRA")
    @app_commands.describe(kind="What the LoRA teaches", base="The base model it is for")
    @app_commands.choices(kind=KINDS, base=BASES)
    async def request(self, interaction: discord.Interaction, kind: str, base: str) -> None:
        # A modal must be the first response; the lab check happens on submit.
        await open_modal(interaction, RequestModal(SubjectKind(kind), base))

    @commands.Cog.listener("on_interaction")
    async def request_submitted(self, interaction: discord.Interaction) -> None:
        if (got := submitted(interaction, REQUEST_MODAL)) is not None:
            await guarded(interaction, lambda: submit_request(self.bot, interaction, *got))

    @app_commands.command(name="status", description="A ticket's card")
    @app_commands.describe(ticket=TICKET_HELP)
    async def status(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await require_lab(self.bot, interaction.guild_id)
        card = await self.bot.db.run(ticket_card, ticket_ref(interaction, ticket))
        await interaction.followup.send(embed=embeds.ticket_card_embed(card), ephemeral=True)

    @app_commands.command(name="list", description="Tickets of the lab")
    @app_commands.describe(
        status="Only tickets in this state", mine="Only the tickets you requested"
    )
    @app_commands.choices(status=STATES)
    async def list_(
        self, interaction: discord.Interaction, status: str | None = None, mine: bool = False
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        cards = await self.bot.db.run(
            list_tickets,
            who.guild_id,
            status=TicketState(status) if status else None,
            requester_user_id=who.user_id if mine else None,
        )
        text = "\n".join(embeds.ticket_line(c) for c in cards) or "No tickets match."
        await interaction.followup.send(embeds.clip(text, 2000), ephemeral=True)

    async def _move(
        self,
        interaction: discord.Interaction,
        ticket: int | None,
        action: Action,
        done: str,
        *,
        reason: str | None = None,
        override: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        await self.bot.db.run(
            act, who, ref, action, self.bot.rules, reason=reason, admin_override=override
        )
        outbox_written(self.bot)
        await interaction.followup.send(done, ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel a ticket (requester or Lab Admin)")
    @app_commands.describe(ticket=TICKET_HELP)
    async def cancel(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await self._move(interaction, ticket, Action.CANCEL, "The ticket is cancelled.")

    @app_commands.command(name="release", description="Release the LoRA at a chosen epoch")
    @app_commands.describe(
        epoch="The saved epoch to release (the one the votes favour)", ticket=TICKET_HELP
    )
    @app_commands.describe(override="Lab Admins: release without the vote quorum")
    async def release(
        self,
        interaction: discord.Interaction,
        epoch: app_commands.Range[int, 1, 1000],
        ticket: int | None = None,
        override: bool = False,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        await self.bot.db.run(
            act, who, ref, Action.RELEASE, self.bot.rules, admin_override=override, epoch=epoch
        )
        outbox_written(self.bot)
        await interaction.followup.send(
            f"Released epoch {epoch}. The post goes to #releases.", ephemeral=True
        )

    @app_commands.command(name="iterate", description="Open the next version of a released LoRA")
    @app_commands.describe(ticket=TICKET_HELP)
    async def iterate_(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        _, number = await self.bot.db.run(iterate, who, ref, self.bot.rules)
        outbox_written(self.bot)
        await interaction.followup.send(
            f"Ticket #{number} opened as the next version, with the same dataset.", ephemeral=True
        )

    @app_commands.command(name="stats", description="Who helped the most")
    async def stats(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        lines = await self.bot.db.run(leaderboard, who.guild_id)
        counts = await self.bot.db.run(ticket_counts, who.guild_id)
        embed = stats_embed(lines, counts)
        await interaction.followup.send(embed=embed, ephemeral=True)

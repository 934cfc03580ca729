"""`/train config|start|stop|retry|unclaim|workers`, and the inactivity auto-unclaim loop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.components import outbox_written
from bot.context import TICKET_HELP, acting, ticket_ref
from bot.embeds import clip
from bot.exts.jobs._logic import PRESET_KINDS, build_config
from db.tickets import act
from db.training import configure, start, unclaim_idle, workers
from lab.lifecycle import Action

if TYPE_CHECKING:
    from bot.app import LabBot

log = logging.getLogger(__name__)


@app_commands.guild_only()
class Train(commands.GroupCog, group_name="train", group_description="Train a claimed job"):
    def __init__(self, bot: LabBot) -> None:
        self.bot = bot
        self.unclaim_loop = tasks.loop(seconds=bot.unclaim_interval)(self._unclaim_idle)

    async def cog_load(self) -> None:
        self.unclaim_loop.start()

    async def cog_unload(self) -> None:
        self.unclaim_loop.cancel()

    async def _unclaim_idle(self) -> None:
        await self.bot.wait_until_ready()
        released = await self.bot.db.run(unclaim_idle, self.bot.rules, now=self.bot.clock())
        if released:
            log.info("auto-unclaimed idle jobs of tickets %s", [t for t, _ in released])
            outbox_written(self.bot)

    @app_commands.command(name="config", description="Preset and overrides for the next run")
    @app_commands.describe(ticket=TICKET_HELP)
    @app_commands.describe(
        kind="Which preset of the ticket's base family",
        overrides="key=value pairs, e.g. max_train_epochs=8 network_dim=16",
    )
    @app_commands.choices(kind=[app_commands.Choice(name=k, value=k) for k in PRESET_KINDS])
    async def config(
        self,
        interaction: discord.Interaction,
        kind: str,
        overrides: str = "",
        ticket: int | None = None,
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        job = await self.bot.db.run(
            configure,
            who,
            ref,
            self.bot.rules,
            build=lambda family: build_config(family, kind, overrides, self.bot.rules.training),
        )
        config = job.config
        preset = job.preset
        shown = " ".join(f"{k}={v}" for k, v in config.items() if k != "preset")
        await interaction.followup.send(
            clip(
                f"Job {job.id} will train with `{preset}` {shown}. Start it with /train start.",
                2000,
            ),
            ephemeral=True,
        )

    async def _move(
        self, interaction: discord.Interaction, ticket: int | None, action: Action, done: str
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        await self.bot.db.run(act, who, ref, action, self.bot.rules)
        outbox_written(self.bot)
        await interaction.followup.send(done, ephemeral=True)

    @app_commands.command(name="start", description="Queue the training run on a lab GPU")
    @app_commands.describe(ticket=TICKET_HELP)
    async def start_(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        _, who = await acting(self.bot, interaction)
        ref = ticket_ref(interaction, ticket)
        job = await self.bot.db.run(start, who, ref, self.bot.rules)
        outbox_written(self.bot)
        await interaction.followup.send(
            f"Job {job.id} is queued (attempt {job.attempt}). Progress appears in the post.",
            ephemeral=True,
        )

    @app_commands.command(name="stop", description="Stop the running training")
    @app_commands.describe(ticket=TICKET_HELP)
    async def stop(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await self._move(
            interaction,
            ticket,
            Action.STOP_TRAINING,
            "Stopping: the worker saves its state and stops within a step.",
        )

    @app_commands.command(name="retry", description="Try a failed or stopped run again")
    @app_commands.describe(ticket=TICKET_HELP)
    async def retry(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await self._move(
            interaction,
            ticket,
            Action.RETRY,
            "Back to CLAIMED: adjust /train config if needed, then /train start.",
        )

    @app_commands.command(name="retrain", description="Train again with new parameters")
    @app_commands.describe(ticket=TICKET_HELP)
    async def retrain(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await self._move(
            interaction,
            ticket,
            Action.RETRAIN,
            "Back to CLAIMED: change /train config, then /train start.",
        )

    @app_commands.command(name="unclaim", description="Give the job back to the board")
    @app_commands.describe(ticket=TICKET_HELP)
    async def unclaim(self, interaction: discord.Interaction, ticket: int | None = None) -> None:
        await self._move(interaction, ticket, Action.UNCLAIM, "The job is back on #job-board.")

    @app_commands.command(name="workers", description="The lab's GPU workers")
    async def workers_(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await acting(self.bot, interaction)
        rows = await self.bot.db.run(workers)
        now = self.bot.clock()
        lines = [
            f"**{w.name}** · {w.gpu} · queues {', '.join(w.queues) or '—'} · "
            f"{f'busy (job {w.busy_job})' if w.busy_job else 'idle'} · last heartbeat "
            f"{max(0, int((now - w.heartbeat_at).total_seconds()))}s ago"
            for w in rows
        ]
        await interaction.followup.send(
            clip("\n".join(lines) or "No workers have checked in yet.", 2000), ephemeral=True
        )

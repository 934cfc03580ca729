"""Vote buttons under sample grids (persistent: the sample set id is in the custom id)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord

from bot import embeds
from bot.components import guarded, outbox_written
from bot.context import acting
from db.voting import cast_vote

if TYPE_CHECKING:
    from bot.app import LabBot

_VALUES = {"up": 1, "down": -1}


class VoteButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"lora:vote:(?P<set>\d+):(?P<value>up|down)",
):
    def __init__(self, sample_set_id: int, value: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Good" if value == "up" else "Not yet",
                emoji="👍" if value == "up" else "👎",
                style=discord.ButtonStyle.success if value == "up" else discord.ButtonStyle.danger,
                custom_id=f"lora:vote:{sample_set_id}:{value}",
            )
        )
        self.sample_set_id = sample_set_id
        self.value = value

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> VoteButton:
        return cls(int(match["set"]), match["value"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: LabBot = interaction.client  # type: ignore[assignment]

        async def work() -> None:
            _, who = await acting(bot, interaction)
            result = await bot.db.run(
                cast_vote, who, self.sample_set_id, _VALUES[self.value], bot.rules
            )
            message = interaction.message
            if message is not None and message.embeds:  # at once; the relay syncs the copy
                await message.edit(
                    embed=embeds.with_tally(message.embeds[0], result.up, result.down)
                )
            outbox_written(bot)
            verb = "changed your vote to" if result.changed else "voted"
            await interaction.followup.send(
                f"You {verb} {'👍' if self.value == 'up' else '👎'}. "
                f"Tally: {embeds.tally_text(result.up, result.down)}",
                ephemeral=True,
            )

        await guarded(interaction, work)


def vote_view(sample_set_id: int, *, closed: bool = False) -> discord.ui.View:
    """The grid's buttons; `closed` (the ticket left TESTING) shows them disabled."""
    view = discord.ui.View(timeout=None)
    for value in ("up", "down"):
        button = VoteButton(sample_set_id, value)
        button.item.disabled = closed
        view.add_item(button)
    return view

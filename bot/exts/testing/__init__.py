"""Testing: vote buttons under sample grids and `/test prompts`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import LabBot


async def setup(bot: LabBot) -> None:
    from bot.exts.testing._cog import Testing
    from bot.exts.testing._views import VoteButton

    bot.add_dynamic_items(VoteButton)
    await bot.add_cog(Testing(bot))

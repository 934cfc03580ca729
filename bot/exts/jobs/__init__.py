"""Training jobs: the #job-board Claim button and `/train …`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import LabBot


async def setup(bot: LabBot) -> None:
    from bot.exts.jobs._cog import Train
    from bot.exts.jobs._views import ClaimButton

    bot.add_dynamic_items(ClaimButton)
    await bot.add_cog(Train(bot))

"""The lab itself: `/lab setup`, `/lab config`, `/lora stats`, `/train workers`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import LabBot


async def setup(bot: LabBot) -> None:
    from bot.exts.lab._cog import Lab

    await bot.add_cog(Lab(bot))

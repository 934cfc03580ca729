"""Captions: `/caption show|edit|bulk|upload|auto|tags|done`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import LabBot


async def setup(bot: LabBot) -> None:
    from bot.exts.captions._cog import Captions

    await bot.add_cog(Captions(bot))

"""Requests and their tickets: `/lora request|status|list|cancel|release|iterate`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import LabBot


async def setup(bot: LabBot) -> None:
    from bot.exts.tickets._cog import Lora

    await bot.add_cog(Lora(bot))

"""A ticket's dataset: uploads answered per file, status, removal, review."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import LabBot


async def setup(bot: LabBot) -> None:
    from bot.exts.dataset._cog import Dataset

    await bot.add_cog(Dataset(bot))

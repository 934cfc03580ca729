"""The outbox relay: delivers what transactions decided, after they committed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import LabBot


async def setup(bot: LabBot) -> None:
    from bot.exts.relay._cog import Relay

    await bot.add_cog(Relay(bot))

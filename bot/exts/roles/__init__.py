"""Lab roles: `/role join|leave` and the persistent role-picker buttons."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import LabBot


async def setup(bot: LabBot) -> None:
    from bot.exts.roles._cog import Roles
    from bot.exts.roles._views import RoleButton

    bot.add_dynamic_items(RoleButton)
    await bot.add_cog(Roles(bot))

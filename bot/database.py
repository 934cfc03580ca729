"""The bot's door to the database: sync services run in a worker thread, so a slow
query never blocks the gateway or another member's interaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session, sessionmaker

P = ParamSpec("P")
T = TypeVar("T")


class Database:
    """Runs ``service(factory, *args)`` off the event loop and returns its result."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    async def run(
        self,
        service: Callable[Concatenate[sessionmaker[Session], P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await asyncio.to_thread(service, self.factory, *args, **kwargs)

"""The bot's door to the database: sync services run in the database's own thread
pool, so a slow query never blocks the gateway, and uploads never hold the threads a
member's query needs (see :mod:`bot.pools`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from bot.pools import Pool

P = ParamSpec("P")
T = TypeVar("T")

DB_THREADS = 8
"""Matches SQLAlchemy's default connection pool (5 + overflow), so threads rarely
wait for a connection."""


class Database:
    """Runs ``service(factory, *args)`` off the event loop and returns its result."""

    def __init__(self, factory: sessionmaker[Session], *, threads: int = DB_THREADS) -> None:
        self.factory = factory
        self.pool = Pool("lab-db", threads)

    async def run(
        self,
        service: Callable[Concatenate[sessionmaker[Session], P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await self.pool.run(service, self.factory, *args, **kwargs)

    def close(self) -> None:
        self.pool.close()

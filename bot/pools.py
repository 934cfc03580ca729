"""Bounded thread pools for the bot's blocking work, one per kind.

The bot's loop must never block, so blocking calls run in threads. One shared pool
(asyncio's default, ``cores + 4`` threads) let six uploads hold every thread while a
member's one-row query waited behind them. Database calls and file work (unpacking
uploads, storage reads, broker sends) therefore get pools of their own: however many
uploads queue up, a query waits only for other queries.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["Pool"]


class Pool:
    """``await pool.run(fn, *args)``: ``fn`` in one of ``threads`` threads named ``name``."""

    def __init__(self, name: str, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"{name}: a pool needs at least one thread")
        self.name = name
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in the pool (context variables go along, as with
        :func:`asyncio.to_thread`)."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        """Stop taking work; running calls finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)

"""What a failed delivery means: try again later, or give up (and why).

Only answers from Discord that can never succeed are permanent. Everything that
says "not now" is retried with backoff: 5xx, 429 (Discord's, or a plain 429 from a
proxy in between), a post archived under us, and the errors a lost connection
reaches us as on Linux (discord.py only retries resets carrying Windows or macOS
errno values): `aiohttp.ClientError`, `OSError`, `asyncio.TimeoutError`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import discord

from db.outbox import RetryableDeliveryError

THREAD_ARCHIVED = 50083
"""Discord's code for "Thread is archived" (an edit in an archived post)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    retry: bool
    reason: str
    retry_after: float | None = None
    bug: bool = False
    """Not Discord's answer but an error of ours: logged with its traceback."""
    outage: bool = False
    """The receiver itself is down (the broker): retried for as long as it lasts."""


def classify(error: BaseException) -> Verdict:
    """Retry or give up on `error`, with a reason an operator can act on."""
    if isinstance(error, RetryableDeliveryError):
        return Verdict(True, str(error), error.retry_after, outage=error.outage)
    if isinstance(error, discord.RateLimited):
        return Verdict(True, f"rate limited for {error.retry_after:.0f}s", error.retry_after)
    if isinstance(error, discord.HTTPException):
        return _http(error)
    if isinstance(error, aiohttp.ClientError | OSError | asyncio.TimeoutError):
        return Verdict(True, f"connection to Discord lost: {type(error).__name__}: {error}")
    return Verdict(False, f"error in the relay: {type(error).__name__}: {error}", bug=True)


def _http(error: discord.HTTPException) -> Verdict:
    said = f"Discord answered {error.status}" + (f" (code {error.code})" if error.code else "")
    said += f": {error.text}" if error.text else ""
    if error.status == 429:
        return Verdict(True, said, _retry_after(error))
    if error.status >= 500 or error.status == 408 or error.code == THREAD_ARCHIVED:
        return Verdict(True, said)
    return Verdict(False, said)


def _retry_after(error: discord.HTTPException) -> float | None:
    """A 429 that discord.py did not handle (no ``Via`` header) still says how long."""
    headers = getattr(error.response, "headers", None) or {}
    header = headers.get("Retry-After") or getattr(error, "retry_after", None)
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None

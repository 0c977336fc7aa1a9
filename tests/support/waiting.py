"""Waiting for a condition: what a test asserts is that something happens, not how fast."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    what: str,
    *,
    polls: int = 1000,
    interval: float = 0.01,
) -> None:
    """Wait until `check()` holds (a plain or an async check), at most `polls` times."""
    for _ in range(polls):
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"never happened: {what}")

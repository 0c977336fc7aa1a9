"""Whether this worker should be sent requests (`/-/ready`): PostgreSQL answers, the store
takes a write, and `mypypi2 serve` is not shutting down.

Load balancers and orchestrators ask every worker often. The checks run at most once per
`CHECK_SECONDS` in a worker (concurrent asks share the one in flight), so probing costs the
database one `SELECT 1` and the store one small write, read and delete every few seconds
whatever the probe rate; each check is bounded, so a store that hangs answers "not ready"
instead of hanging the probe. The shutdown flag is looked at on every ask: it must turn the
answer at once, before the server stops taking connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

from mypypi2 import storage as storage_module
from mypypi2.clock import Clock
from mypypi2.db import Database
from mypypi2.storage import Storage
from mypypi2.upstream.coalesce import Coalescer

# How long one check's answer stands. Short next to any load balancer's failure threshold,
# long next to the checks' own cost.
CHECK_SECONDS = 2.0
# The longest one part's check may take before it counts as failed.
CHECK_TIMEOUT = 5.0


class Readiness:
    def __init__(
        self,
        db: Database,
        storage: Storage,
        *,
        shutdown_flag: Path | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._db = db
        self._storage = storage
        self._shutdown_flag = shutdown_flag
        self._clock = clock
        self._checking = Coalescer[None, list[str]]()
        self._problems: list[str] = []
        self._checked_at: float | None = None

    async def problems(self) -> list[str]:
        """What stops this worker from serving, one line per part; empty when ready."""
        if self.shutting_down:
            return ["shutting down"]
        if self._checked_at is None or self._clock() - self._checked_at >= CHECK_SECONDS:
            self._problems = await self._checking.run(None, self._check)
            self._checked_at = self._clock()
        return self._problems

    @property
    def shutting_down(self) -> bool:
        # One stat: `mypypi2 serve` creates the file when told to stop (see servers.py).
        return self._shutdown_flag is not None and self._shutdown_flag.exists()

    async def _check(self) -> list[str]:
        parts = {"database": self._db.ping(), "store": storage_module.probe(self._storage)}
        outcomes = await asyncio.gather(*(_bounded(check) for check in parts.values()))
        named = zip(parts, outcomes, strict=True)
        return [f"{part}: {problem}" for part, problem in named if problem]


async def _bounded(check: Awaitable[None]) -> str | None:
    """None when `check` succeeds in time, else what went wrong."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:  # any failure means the part cannot serve: name it
        return " ".join(f"{type(exc).__name__}: {exc}".split())  # one line per part
    return None

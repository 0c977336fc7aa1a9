"""The eviction sweep: `mypypi2 gc`, and the same on a schedule in every serving worker.

One sweeper at a time in the whole deployment: each sweep opens a connection of its own
and tries the sweep's advisory lock on it; a worker that does not get it skips this round.

Removal never tells a client a file is stored once its bytes are gone, and never takes
bytes from under a client:
1. the plan spares objects used within the grace period (longer than the time last uses
   take to reach the database, and on S3 than a presigned URL lives) or being downloaded;
2. in one transaction per batch, the rows let go of the objects (checked again under the
   row locks: a use recorded since the plan keeps the object), every worker is told to
   forget them (a purge notification, delivered at commit), and the files are claimed as
   if being downloaded, so that a request meanwhile waits instead of storing the same
   content-addressed key again just before its deletion;
3. after a pause for the notification to arrive, the bytes are deleted and the claims let
   go: a request waiting on them downloads the file afresh. A disk reader that
   already has the file open keeps reading (POSIX); anything asking later finds the row
   pending and fetches the file again from the upstream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import msgspec

from mypypi2 import tasks
from mypypi2.clock import Clock
from mypypi2.config import Config, RepositoryConfig, StorageConfig
from mypypi2.eviction import Eviction, Limits, Policy, low_water, plan
from mypypi2.queries import stored_uses
from mypypi2.queries.notifications import Purged, notify_purged
from mypypi2.queries.stored_uses import StoredObject
from mypypi2.storage import Storage
from mypypi2.usage import FLUSH_SECONDS

log = logging.getLogger(__name__)

# Uses newer than this protect an object: a few flush intervals, so that a use not yet
# flushed by a busy or briefly disconnected worker still counts.
GRACE_SECONDS = 5 * FLUSH_SECONDS
# How long the rows' release has to reach every worker before the bytes go.
SETTLE_SECONDS = 1.0
# Objects let go per transaction (and per progress step).
BATCH_OBJECTS = 500
# How often each worker tries to sweep (randomized by up to a tenth, so workers started
# together do not all try at once).
SWEEP_SECONDS = 600.0

Progress = Callable[[list[Eviction], int], None]  # a batch removed, objects planned in all


def grace_seconds(storage: StorageConfig) -> float:
    """Presigned URLs handed out stay valid for `presign-seconds`: the object must too."""
    if storage.backend == "s3" and storage.redirect and not storage.public_url:
        return max(GRACE_SECONDS, float(storage.presign_seconds))
    return GRACE_SECONDS


@dataclass(frozen=True, slots=True)
class Report:
    """One sweep: what was (or, in a dry run, would be) evicted."""

    evicted: list[Eviction]
    usage_bytes: int  # before the sweep
    max_bytes: int | None  # the store's cap
    dry_run: bool
    # Objects no limit may take now: used within the grace period, or being downloaded.
    protected: list[StoredObject]

    @property
    def bytes_freed(self) -> int:
        return sum(eviction.object.size for eviction in self.evicted)

    def log_line(self) -> str:
        """The sweep as one JSON line (for log collectors, until there are metrics)."""
        return msgspec.json.encode(
            {
                "event": "eviction-sweep",
                "dry_run": self.dry_run,
                "evicted": len(self.evicted),
                "unused": sum(e.reason == "unused" for e in self.evicted),
                "over_cap": sum(e.reason == "over-cap" for e in self.evicted),
                "bytes_freed": self.bytes_freed,
                "usage_bytes": self.usage_bytes - self.bytes_freed,
                "max_bytes": self.max_bytes,
                "low_water_bytes": None if self.max_bytes is None else low_water(self.max_bytes),
                "protected": len(self.protected),
            }
        ).decode()


class Sweeper:
    def __init__(
        self,
        dsn: str,
        storage: Storage,
        policy: Policy,
        *,
        grace_seconds: float = GRACE_SECONDS,
        settle_seconds: float = SETTLE_SECONDS,
        before: Callable[[], Awaitable[None]] | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._dsn = dsn
        self._storage = storage
        self.policy = policy
        self._grace = grace_seconds
        self._settle = settle_seconds
        self._before = before  # e.g. flush this worker's last uses, so they count
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def sweep(
        self, *, dry_run: bool = False, only: str | None = None, progress: Progress | None = None
    ) -> Report | None:
        """Evict what the policy says (nothing in a dry run); None when another process
        is sweeping. `only`: evict only that repository's files."""
        connection = await asyncpg.connect(
            self._dsn, server_settings={"application_name": "mypypi2-sweeper"}
        )
        try:
            if not dry_run and not await stored_uses.try_sweep_lock(connection):
                return None
            try:
                if self._before is not None:
                    await self._before()
                now = self._clock()
                objects = await stored_uses.stored_objects(connection)
                planned = plan(objects, self.policy, now, self._grace, only)
                evicted = planned
                if not dry_run:
                    evicted = await self._remove(connection, planned, now - self._grace, progress)
                    await stored_uses.delete_orphan_uses(connection)
            finally:
                if not dry_run:
                    await stored_uses.release_sweep_lock(connection)
        finally:
            await connection.close()
        recent = now - self._grace
        protected = [o for o in objects if o.busy or o.last_used >= recent]
        usage = sum(o.size for o in objects)
        report = Report(evicted, usage, self.policy.store.max_bytes, dry_run, protected)
        log.info("%s", report.log_line())
        return report

    async def _remove(
        self,
        connection: asyncpg.Connection,
        planned: list[Eviction],
        unused_since: float,
        progress: Progress | None,
    ) -> list[Eviction]:
        removed: list[Eviction] = []
        attempt = uuid.uuid4()  # the claims that hold off downloads of evicted files
        never_a_spool = str(self._storage.spool_dir / f"{attempt.hex}.evicting")
        for start in range(0, len(planned), BATCH_OBJECTS):
            batch = planned[start : start + BATCH_OBJECTS]
            async with connection.transaction():
                cleared = await stored_uses.clear_evicted(
                    connection, [e.object.key for e in batch], unused_since
                )
                await stored_uses.claim_evicted(
                    connection, [row.file_id for row in cleared], attempt, never_a_spool
                )
                gone = set(
                    await stored_uses.forget_unreferenced(connection, [c.key for c in cleared])
                )
                projects: dict[str, set[str]] = {}
                for row in cleared:
                    projects.setdefault(row.repository, set()).add(row.project)
                for repository, names in sorted(projects.items()):
                    await notify_purged(connection, Purged(repository, sorted(names), files=True))
            done = [e for e in batch if e.object.key in gone]
            try:
                if done:
                    await asyncio.sleep(self._settle)
                    await self._storage.delete_many([e.object.key for e in done])
            finally:
                await stored_uses.release_evicted(connection, attempt)
            removed += done
            if progress is not None:
                progress(done, len(planned))
        return removed

    def start(self, every: float = SWEEP_SECONDS) -> None:
        """Sweep every `every` seconds in the background (when the policy bounds anything)."""
        if self.policy.bounded:
            self._task = asyncio.create_task(self._run(every))

    async def close(self) -> None:
        await tasks.stop(self._task)

    async def _run(self, every: float) -> None:
        while True:
            await asyncio.sleep(every * random.uniform(0.9, 1.0))
            try:
                await self.sweep()
            except Exception:  # the database or the store failed this round: next one
                log.exception("eviction sweep failed")


def policy(config: Config) -> Policy:
    """The limits the configuration sets, for the store and per repository."""

    def limits(options: StorageConfig | RepositoryConfig) -> Limits:
        return Limits(options.max_bytes, options.evict_unused_after)

    return Policy(limits(config.storage), {r.name: limits(r) for r in config.repositories})

"""What to evict from a bounded store: a pure function of the objects and their last uses.

Limits are set for the whole store and, optionally, per repository:
- `unused_seconds`: an object not used for longer than this goes (a repository's own limit
  replaces the store's for its objects);
- `max_bytes`: once usage is over the cap, the least recently used objects go until usage
  is under the low-water mark (`LOW_WATER` of the cap), so that a store at its cap is not
  swept again at every new file. A repository's cap counts its own objects; the store's
  counts them all.

An object used within the grace period, or being downloaded, is never evicted, even if the
store stays over its cap: its bytes may be on their way to a client that was just told
where they are. Only distribution files are evicted: pages and `.metadata` bodies live in
PostgreSQL and are small.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from mypypi2.queries.stored_uses import StoredObject

LOW_WATER = 0.9


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int | None = None
    unused_seconds: float | None = None

    @property
    def bounded(self) -> bool:
        return self.max_bytes is not None or self.unused_seconds is not None


@dataclass(frozen=True, slots=True)
class Policy:
    store: Limits = Limits()
    repositories: Mapping[str, Limits] = field(default_factory=dict)

    @property
    def bounded(self) -> bool:
        return self.store.bounded or any(limits.bounded for limits in self.repositories.values())

    def unused_seconds(self, repository: str) -> float | None:
        own = self.repositories.get(repository)
        if own is not None and own.unused_seconds is not None:
            return own.unused_seconds
        return self.store.unused_seconds


@dataclass(frozen=True, slots=True)
class Eviction:
    object: StoredObject
    reason: str  # "unused" (past its limit) or "over-cap" (least recently used)


def low_water(max_bytes: int) -> int:
    return math.floor(max_bytes * LOW_WATER)


def plan(
    objects: Iterable[StoredObject],
    policy: Policy,
    now: float,
    grace_seconds: float,
    only: str | None = None,
) -> list[Eviction]:
    """The objects to evict, in the order decided; `only`: evict that repository's alone
    (usage still counts every repository's objects)."""

    def evictable(candidate: StoredObject) -> bool:
        return (
            not candidate.busy
            and candidate.last_used < now - grace_seconds
            and only in (None, candidate.repository)
        )

    kept = sorted(objects, key=lambda o: (o.last_used, o.key))  # least recent first
    evictions = []
    for candidate in kept:
        limit = policy.unused_seconds(candidate.repository)
        if limit is not None and evictable(candidate) and candidate.last_used < now - limit:
            evictions.append(Eviction(candidate, "unused"))
    for repository, cap in _caps(policy):
        doomed = {e.object.key for e in evictions}
        kept = [o for o in kept if o.key not in doomed]
        scope = [o for o in kept if repository in (None, o.repository)]
        evictions += _over_cap(scope, cap, evictable)
    return evictions


def _caps(policy: Policy) -> list[tuple[str | None, int]]:
    """Each repository's cap (None: the store's, applied last), in a stable order."""
    caps: list[tuple[str | None, int]] = [
        (repository, limits.max_bytes)
        for repository, limits in sorted(policy.repositories.items())
        if limits.max_bytes is not None
    ]
    if policy.store.max_bytes is not None:
        caps.append((None, policy.store.max_bytes))
    return caps


def _over_cap(
    scope: list[StoredObject], cap: int, evictable: Callable[[StoredObject], bool]
) -> list[Eviction]:
    """Least recently used first, down to the low-water mark, when `scope` is over `cap`."""
    usage = sum(o.size for o in scope)
    if usage <= cap:
        return []
    target = low_water(cap)
    evictions = []
    for candidate in scope:
        if usage <= target:
            break
        if evictable(candidate):
            evictions.append(Eviction(candidate, "over-cap"))
            usage -= candidate.size
    return evictions

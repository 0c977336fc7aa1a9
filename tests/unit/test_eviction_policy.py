"""The eviction policy: which stored objects go, and in which order."""

from __future__ import annotations

from mypypi2.eviction import LOW_WATER, Eviction, Limits, Policy, low_water, plan
from mypypi2.queries.stored_uses import StoredObject

NOW = 1_000_000.0
GRACE = 300.0
DAY = 86400.0


def stored(
    key: str, size: int, age: float, repository: str = "pypi", busy: bool = False
) -> StoredObject:
    return StoredObject(f"{repository}/{key}", repository, size, NOW - age, busy)


def keys(evictions: list[Eviction]) -> list[str]:
    return [e.object.key for e in evictions]


def test_under_the_cap_nothing_goes() -> None:
    objects = [stored("a", 40, DAY), stored("b", 60, 2 * DAY)]

    assert plan(objects, Policy(Limits(max_bytes=100)), NOW, GRACE) == []


def test_over_the_cap_least_recently_used_go_until_under_the_low_water_mark() -> None:
    objects = [
        stored("newest", 30, 1 * DAY),
        stored("oldest", 30, 4 * DAY),
        stored("older", 30, 3 * DAY),
        stored("old", 30, 2 * DAY),
    ]
    cap = 100  # usage 120; low water 90

    evictions = plan(objects, Policy(Limits(max_bytes=cap)), NOW, GRACE)

    assert keys(evictions) == ["pypi/oldest"]
    assert {e.reason for e in evictions} == {"over-cap"}
    assert low_water(cap) == 90 == int(cap * LOW_WATER)


def test_the_low_water_mark_takes_more_than_the_excess() -> None:
    objects = [stored(name, 10, (10 - i) * DAY) for i, name in enumerate("abcdefghijk")]
    # 110 bytes over a cap of 100: one object would do, the low water mark (90) takes two.

    evictions = plan(objects, Policy(Limits(max_bytes=100)), NOW, GRACE)

    assert keys(evictions) == ["pypi/a", "pypi/b"]


def test_recently_used_and_downloading_objects_are_never_evicted() -> None:
    objects = [
        stored("just-used", 50, GRACE / 2),
        stored("downloading", 50, 9 * DAY, busy=True),
        stored("idle", 50, DAY),
    ]

    evictions = plan(objects, Policy(Limits(max_bytes=60, unused_seconds=DAY / 2)), NOW, GRACE)

    assert keys(evictions) == ["pypi/idle"]  # still over the cap: nothing else may go


def test_unused_for_longer_than_the_limit_goes_whatever_the_usage() -> None:
    objects = [stored("stale", 1, 31 * DAY), stored("fresh", 1, 29 * DAY)]

    evictions = plan(objects, Policy(Limits(unused_seconds=30 * DAY)), NOW, GRACE)

    assert keys(evictions) == ["pypi/stale"]
    assert evictions[0].reason == "unused"


def test_a_repository_limit_replaces_the_store_one_for_its_objects() -> None:
    objects = [stored("a", 1, 10 * DAY), stored("b", 1, 10 * DAY, repository="private")]
    policy = Policy(Limits(unused_seconds=5 * DAY), {"private": Limits(unused_seconds=20 * DAY)})

    assert keys(plan(objects, policy, NOW, GRACE)) == ["pypi/a"]


def test_a_repository_cap_counts_its_own_objects_and_the_store_cap_all() -> None:
    objects = [
        stored("p1", 50, 5 * DAY, repository="private"),
        stored("p2", 50, 1 * DAY, repository="private"),
        stored("a", 50, 9 * DAY),
        stored("b", 50, 8 * DAY),
    ]
    policy = Policy(Limits(max_bytes=160), {"private": Limits(max_bytes=60)})

    evictions = plan(objects, policy, NOW, GRACE)

    # private: 100 > 60, down to 54: p1 goes. Then the store: 150 <= 160, nothing more.
    assert keys(evictions) == ["private/p1"]
    policy = Policy(Limits(max_bytes=120), {"private": Limits(max_bytes=60)})
    # The store then: 150 > 120, down to 108: a, the least recently used left, goes.
    assert keys(plan(objects, policy, NOW, GRACE)) == ["private/p1", "pypi/a"]


def test_only_one_repository_is_evicted_from_when_asked() -> None:
    objects = [stored("a", 50, 9 * DAY), stored("p", 50, 1 * DAY, repository="private")]

    evictions = plan(objects, Policy(Limits(max_bytes=60)), NOW, GRACE, only="private")

    assert keys(evictions) == ["private/p"]


def test_unbounded_policies_say_so() -> None:
    assert not Policy().bounded
    assert not Policy(Limits(), {"pypi": Limits()}).bounded
    assert Policy(Limits(), {"pypi": Limits(max_bytes=1)}).bounded
    assert Policy(Limits(unused_seconds=1.0)).bounded

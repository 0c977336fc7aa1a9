"""The per-worker LRU, and purges dropping entries from it."""

from __future__ import annotations

from mypypi2.lru import LRU
from mypypi2.queries.notifications import Purged


def test_cache_evicts_the_least_recently_used() -> None:
    cache: LRU[tuple[str, str], object] = LRU(2)
    a, b, c = object(), object(), object()
    cache.put(("pypi", "a"), a)
    cache.put(("pypi", "b"), b)

    assert cache.get(("pypi", "a")) is a  # now b is the least recently used
    cache.put(("pypi", "c"), c)

    assert cache.get(("pypi", "b")) is None
    assert cache.get(("pypi", "a")) is a
    assert cache.get(("pypi", "c")) is c


def test_cache_put_refreshes_recency_and_replaces() -> None:
    cache: LRU[tuple[str, str], object] = LRU(2)
    cache.put(("pypi", "a"), object())
    cache.put(("pypi", "b"), object())
    newer = object()

    cache.put(("pypi", "a"), newer)  # replacing makes it the most recent
    cache.put(("pypi", "c"), object())

    assert cache.get(("pypi", "a")) is newer
    assert cache.get(("pypi", "b")) is None


def test_cache_of_one() -> None:
    cache: LRU[tuple[str, str], object] = LRU(1)
    cache.put(("pypi", "a"), object())
    second = object()
    cache.put(("pypi", "b"), second)

    assert cache.get(("pypi", "a")) is None
    assert cache.get(("pypi", "b")) is second


def test_drop_names_of_one_repository() -> None:
    cache: LRU[tuple[str, str], object] = LRU(10)
    for key in [("pypi", "a"), ("pypi", "b"), ("pypi", ""), ("other", "a")]:
        cache.put(key, object())

    cache.drop(lambda key: Purged("pypi", ["a", "missing"], files=False).covers(*key))

    assert cache.get(("pypi", "a")) is None
    assert cache.get(("pypi", "b")) is not None
    assert cache.get(("pypi", "")) is not None  # the project list is not a named project
    assert cache.get(("other", "a")) is not None


def test_drop_a_whole_repository_with_its_list() -> None:
    cache: LRU[tuple[str, str], object] = LRU(10)
    for key in [("pypi", "a"), ("pypi", "b"), ("pypi", ""), ("other", "a"), ("other", "")]:
        cache.put(key, object())

    cache.drop(lambda key: Purged("pypi", None, files=False).covers(*key))

    for key in [("pypi", "a"), ("pypi", "b"), ("pypi", "")]:
        assert cache.get(key) is None, key
    assert cache.get(("other", "a")) is not None
    assert cache.get(("other", "")) is not None


def test_drop_of_nothing_held_is_harmless() -> None:
    cache: LRU[tuple[str, str], object] = LRU(2)
    cache.drop(lambda key: Purged("pypi", None, files=False).covers(*key))
    cache.drop(lambda key: Purged("pypi", [], files=False).covers(*key))
    kept = object()
    cache.put(("pypi", "a"), kept)
    cache.drop(lambda key: Purged("pypi", [], files=False).covers(*key))

    assert cache.get(("pypi", "a")) is kept


def test_pop_forgets_one_key_only() -> None:
    cache: LRU[tuple[str, str], object] = LRU(10)
    kept = object()
    cache.put(("pypi", "a"), object())
    cache.put(("pypi", "b"), kept)

    cache.pop(("pypi", "a"))
    cache.pop(("pypi", "missing"))

    assert cache.get(("pypi", "a")) is None
    assert cache.get(("pypi", "b")) is kept
    assert len(cache) == 1


def _sized(size: int) -> bytes:
    return b"x" * size


def test_cache_keeps_within_its_byte_budget() -> None:
    cache: LRU[str, bytes] = LRU(10, budget=100, weigh=len)
    cache.put("a", _sized(40))
    cache.put("b", _sized(40))
    assert cache.get("a") is not None  # now b is the least recently used

    cache.put("c", _sized(40))

    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) != (None, None)
    assert cache.weight == 80


def test_an_entry_alone_over_the_budget_stays() -> None:
    cache: LRU[str, bytes] = LRU(10, budget=100, weigh=len)
    cache.put("a", _sized(10))
    cache.put("big", _sized(500))

    assert cache.get("a") is None
    assert cache.get("big") is not None
    assert cache.weight == 500


def test_a_grown_entry_is_weighed_again() -> None:
    held = {"a": bytearray(10), "b": bytearray(10)}
    cache: LRU[str, bytearray] = LRU(10, budget=100, weigh=len)
    cache.put("a", held["a"])
    cache.put("b", held["b"])

    held["b"].extend(bytes(85))  # b renders another form of itself
    cache.reweigh("b")

    assert cache.get("a") is None  # the least recently used went
    assert cache.get("b") is held["b"]
    assert cache.weight == 95
    cache.pop("b")
    assert (len(cache), cache.weight) == (0, 0)

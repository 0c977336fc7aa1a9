"""The Coalescer, driven step by step with asyncio.Event: no sleeps, no timing."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mypypi2.upstream.coalesce import Coalescer


class Boom(Exception):
    pass


class Work:
    """A unit of shared work that runs only when released, and counts its executions."""

    def __init__(self, result: str = "done", error: Exception | None = None) -> None:
        self.result = result
        self.error = error
        self.started = 0
        self.finished = 0
        self.cancelled = 0
        self.running = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.started += 1
        self.running.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        if self.error is not None:
            raise self.error
        return f"{self.result} #{self.started}"


async def settle() -> None:
    """Let every ready task run until it blocks again (a few loop turns, no waiting)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_callers_share_one_execution() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    work = Work()

    callers = [asyncio.create_task(coalescer.run("page", work)) for _ in range(10)]
    await work.running.wait()
    await settle()
    assert work.started == 1
    assert not any(caller.done() for caller in callers)

    work.release.set()
    results = await asyncio.gather(*callers)

    assert results == ["done #1"] * 10
    assert work.started == work.finished == 1


async def test_a_caller_arriving_while_running_joins_the_running_execution() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    work = Work()
    early = asyncio.create_task(coalescer.run("page", work))
    await work.running.wait()

    late = asyncio.create_task(coalescer.run("page", Work(result="never used")))
    await settle()
    work.release.set()

    assert await early == await late == "done #1"


async def test_key_is_dropped_after_completion_so_a_later_call_runs_again() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    work = Work()
    work.release.set()

    assert await coalescer.run("page", work) == "done #1"
    assert await coalescer.run("page", work) == "done #2"
    assert work.started == 2


async def test_every_waiter_sees_the_exception() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    error = Boom("upstream down")
    work = Work(error=error)
    callers = [asyncio.create_task(coalescer.run("page", work)) for _ in range(5)]
    await work.running.wait()

    work.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)

    assert outcomes == [error] * 5
    assert work.started == 1


async def test_key_is_dropped_after_failure_so_a_later_call_runs_again() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    failing = Work(error=Boom("once"))
    failing.release.set()
    with pytest.raises(Boom):
        await coalescer.run("page", failing)

    working = Work()
    working.release.set()

    assert await coalescer.run("page", working) == "done #1"


async def test_cancelling_one_waiter_does_not_cancel_the_work_for_the_others() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    work = Work()
    leaving = asyncio.create_task(coalescer.run("page", work))  # the one that started it
    staying = asyncio.create_task(coalescer.run("page", work))
    await work.running.wait()

    leaving.cancel()
    await settle()
    assert leaving.cancelled()
    assert work.cancelled == 0

    work.release.set()

    assert await staying == "done #1"
    assert (work.started, work.finished, work.cancelled) == (1, 1, 0)


async def test_work_outlives_all_its_waiters_and_is_joined_by_the_next_caller() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    work = Work()
    gone = [asyncio.create_task(coalescer.run("page", work)) for _ in range(3)]
    await work.running.wait()
    for caller in gone:
        caller.cancel()
    await settle()
    assert all(caller.cancelled() for caller in gone)

    newcomer = asyncio.create_task(coalescer.run("page", work))
    await settle()
    work.release.set()

    # Still the first execution: cancelled waiters never cancelled the work.
    assert await newcomer == "done #1"
    assert work.started == 1


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What the running loop's exception handler receives during the test."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)


async def test_failure_with_every_waiter_gone_is_not_reported_as_lost(
    loop_errors: list[dict[str, Any]],
) -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    work = Work(error=Boom("nobody is listening"))
    caller = asyncio.create_task(coalescer.run("page", work))
    await work.running.wait()
    caller.cancel()
    await settle()

    work.release.set()
    await settle()
    del caller
    gc.collect()
    await settle()

    assert work.finished == 1
    assert not [e for e in loop_errors if isinstance(e.get("exception"), Boom)]


async def test_different_keys_run_independently() -> None:
    coalescer: Coalescer[str, str] = Coalescer()
    slow, fast = Work(result="slow"), Work(result="fast")
    slow_caller = asyncio.create_task(coalescer.run("a", slow))
    fast_caller = asyncio.create_task(coalescer.run("b", fast))
    await slow.running.wait()
    await fast.running.wait()

    fast.release.set()
    assert await fast_caller == "fast #1"
    assert not slow_caller.done()

    slow.release.set()
    assert await slow_caller == "slow #1"
    assert (slow.started, fast.started) == (1, 1)


async def test_a_failure_on_one_key_does_not_reach_another() -> None:
    coalescer: Coalescer[tuple[str, str], str] = Coalescer()
    failing, working = Work(error=Boom("a fails")), Work()
    failing_caller = asyncio.create_task(coalescer.run(("pypi", "a"), failing))
    working_caller = asyncio.create_task(coalescer.run(("pypi", "b"), working))
    await failing.running.wait()
    await working.running.wait()

    failing.release.set()
    working.release.set()

    with pytest.raises(Boom):
        await failing_caller
    assert await working_caller == "done #1"

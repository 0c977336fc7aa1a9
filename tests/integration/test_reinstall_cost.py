"""What a CI fleet's warm re-install costs the upstream: nothing within the TTL, one
conditional request per page after it.

A 20-package set (a root wheel requiring 19 others) is installed with uv into fresh
environments with fresh client caches, as a CI job does, three times: cold, warm within
the TTL, and warm past it. The cache's clock is moved by the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.clients import ProxyTrap, isolated_env, new_venv, run
from tests.dists import wheel
from tests.local_upstream import LocalUpstream, UpstreamProject
from tests.support.cache import Clock, StartCache, repository

pytestmark = pytest.mark.timeout(600)

LEAVES = [f"leaf{n:02d}" for n in range(1, 20)]
PAGES = {f"/simple/{name}/" for name in ["root", *LEAVES]}
TTL = 600.0


async def uv_install(index: str, work: Path, proxy: ProxyTrap) -> None:
    env = isolated_env(work / "home", proxy) | {"UV_NO_CONFIG": "1", "UV_NO_PROGRESS": "1"}
    python = await new_venv(work / "venv", env)
    uv = Path(sys.executable).parent / "uv"
    await run(
        uv, "pip", "install", "--python", python, "--index-url", index, "--no-config",
        "--cache-dir", work / "uv-cache", "root",
        cwd=work, env=env,
    )  # fmt: skip


async def test_warm_reinstall_costs_nothing_within_ttl_and_one_304_per_page_after(
    start_cache: StartCache, upstream: LocalUpstream, proxy_trap: ProxyTrap, tmp_path: Path
) -> None:
    upstream.add(UpstreamProject("root", [wheel("root", "1.0", LEAVES)]))
    for name in LEAVES:
        upstream.add(UpstreamProject(name, [wheel(name, "1.0")]))
    clock = Clock()
    cache = await start_cache(repository("pypi", upstream, ttl=TTL), clock=clock)
    index = f"{cache.url}/pypi/simple/"

    await uv_install(index, tmp_path / "cold", proxy_trap)
    cold = len(upstream.requests)
    # Each page and each wheel crossed the link once; the wheels' metadata too.
    assert cold == len(PAGES) * 3

    clock.advance(TTL / 2)
    await uv_install(index, tmp_path / "within-ttl", proxy_trap)
    assert len(upstream.requests) == cold

    clock.advance(TTL)
    await uv_install(index, tmp_path / "past-ttl", proxy_trap)
    after = upstream.requests[cold:]
    # Past the TTL each page is revalidated once, conditionally, and costs a 304; files
    # never change, so they are not asked for again. (Just past the TTL the answers come
    # from the store while the revalidation runs in the background, so it may still be
    # under way when the install ends.)
    await cache.stop()
    assert {request.path for request in after} == PAGES
    assert len(after) == len(PAGES)
    assert all(request.headers.get("If-None-Match") for request in after)
    assert {request.status for request in after} == {304}
    assert proxy_trap.requests == []

"""Real pip, uv and poetry install a small tree through the cache, on disk and on S3.

The tree: `app` (a wheel) requires `lib>=1`; `lib` has 1.0 (sdist only) and 1.1 (wheel and
sdist), so resolvers pick the 1.1 wheel; `lib` requires `tool`, which exists only as an
sdist, so every client builds it (with the in-tree backend: no build requirements, no
index needed for build tools). Each client installs twice into fresh environments with
fresh client caches: cold, with the cache filling from the loopback upstream, then warm,
with the upstream stopped, so everything comes from the cache. On S3 a stored file answers
with a 308 to a presigned URL on the local S3 server, which the clients follow.

How the clients are isolated from this machine: tests/clients.py.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from mypypi2.config import StorageConfig
from tests.clients import (
    INSTALLED_FILES,
    INSTALLERS,
    WHEEL_METADATA,
    ProxyTrap,
    assert_installed,
    file_hits,
    isolated_env,
)
from tests.local_upstream import LocalUpstream
from tests.support.cache import RunningCache, StartCache


@pytest.fixture(params=["disk", "s3"])
def storage(request: pytest.FixtureRequest) -> StorageConfig:
    if request.param == "s3":
        s3: StorageConfig = request.getfixturevalue("s3_storage")
        return s3
    return StorageConfig()


# Poetry is slow (lock then install, twice); the per-command timeout reports a hang first.
pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("client", INSTALLERS)
async def test_client_installs_cold_then_warm_without_upstream(
    client: str,
    storage: StorageConfig,
    tree: None,
    start_cache: StartCache,
    upstream: LocalUpstream,
    proxy_trap: ProxyTrap,
    tmp_path: Path,
) -> None:
    install = INSTALLERS[client]
    cache = await start_cache(storage=storage)
    index = f"{cache.url}/pypi/simple/"

    cold = tmp_path / "cold"
    cold.mkdir()
    env = isolated_env(cold / "home", proxy_trap)
    await assert_installed(await install(index, cold, env), cold, env)
    assert proxy_trap.requests == []

    hits = file_hits(upstream)
    downloads = {path: n for path, n in hits.items() if not path.endswith(".metadata")}
    metadata = {path: n for path, n in hits.items() if path.endswith(".metadata")}
    # Each chosen file crossed the upstream link once, however often the client asked.
    assert downloads == dict.fromkeys(INSTALLED_FILES, 1)
    # Every client resolved from the wheels' PEP 658 metadata (pip, uv and poetry all ask
    # for `<wheel URL>.metadata`), which also crossed the upstream link once.
    assert metadata == dict.fromkeys(WHEEL_METADATA, 1)

    await upstream.stop()
    warm = tmp_path / "warm"
    warm.mkdir()
    env = isolated_env(warm / "home", proxy_trap)
    await assert_installed(await install(index, warm, env), warm, env)
    assert proxy_trap.requests == []
    assert file_hits(upstream) == hits

    await assert_files_served_from_store(cache, storage)


async def assert_files_served_from_store(cache: RunningCache, storage: StorageConfig) -> None:
    """Stored files come from the store: directly on disk, by a redirect to S3."""
    async with aiohttp.ClientSession() as http:
        for path in sorted(INSTALLED_FILES):
            url = f"{cache.url}/pypi{path}"
            async with http.get(url, allow_redirects=False) as response:
                if storage.backend == "s3":
                    assert response.status == 308, url
                    assert response.headers["Location"].startswith(storage.endpoint_url), url
                else:
                    assert response.status == 200, url

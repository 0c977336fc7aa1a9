"""Graceful shutdown of `mypypi2 serve`, under both servers: SIGTERM turns every worker's
`/-/ready` to 503 while they go on serving for drain-time, then the server stops taking
connections, and a download in flight still reaches its client whole before the process
exits.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from pathlib import Path

import aiohttp
import pytest

from mypypi2.config import SERVERS
from tests.local_upstream import Fault, LocalUpstream, UpstreamFile, UpstreamProject
from tests.support import waiting
from tests.support.process import Launch, clean_environ, get_as_pip, write_config

# A cold download of about 4 s: it starts before SIGTERM and ends well after the drain.
CONTENT = bytes(range(256)) * 256  # 64 KiB
SLOW = Fault(slow_chunk=len(CONTENT) // 20, slow_delay=0.2)
DRAIN_TIME = 1.5
# Bounds on waiting, not assertions on speed.
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=60)
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=0.5)


async def probe(url: str) -> int | None:
    """The status of a GET on a new connection; None when the server takes none."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=PROBE_TIMEOUT) as http:
        try:
            async with http.get(url) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None


@pytest.mark.parametrize("server_name", SERVERS)
async def test_sigterm_drains_then_lets_the_download_in_flight_finish(
    server_name: str, launch: Launch, upstream: LocalUpstream, database: str, tmp_path: Path
) -> None:
    upstream.add(UpstreamProject("slow", [UpstreamFile("slow-1.0.tar.gz", content=CONTENT)]))
    upstream.fail("/files/slow/slow-1.0.tar.gz", SLOW)
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": database},
            "server": {"drain-time": DRAIN_TIME},
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )
    server = await launch(tmp_path, clean_environ(), "--workers", "2", "--server", server_name)
    assert (await get_as_pip(f"{server.url}/pypi/simple/slow/"))[0] == 200
    assert await probe(f"{server.url}/-/ready") == 200

    async with (
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http,
        http.get(f"{server.url}/pypi/files/slow/slow-1.0.tar.gz") as response,
    ):
        assert response.status == 200
        first = await response.content.readany()  # the download is under way
        server.process.send_signal(signal.SIGTERM)

        async def not_ready() -> bool:
            return await probe(f"{server.url}/-/ready") == 503

        await waiting.eventually(not_ready, "serve handles the signal")
        # Drained: not ready on every new connection (either worker), still serving.
        during = [await probe(f"{server.url}/-/ready") for _ in range(4)]
        _, _, why = await get_as_pip(f"{server.url}/-/ready")
        health = await probe(f"{server.url}/-/health")

        async def refused() -> bool:
            return await probe(f"{server.url}/-/health") is None

        await waiting.eventually(refused, "the server stops taking connections")
        # The download was still in flight when the server stopped, and is delivered.
        assert upstream.completed["/files/slow/slow-1.0.tar.gz"] == 0
        assert server.process.returncode is None
        body = first + await response.read()

    assert during == [503] * 4
    assert why == b"not ready\nshutting down\n"
    assert health == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(CONTENT).digest()
    assert await asyncio.wait_for(server.process.wait(), 30) == 0, server.stderr()
    log = server.stderr() + server.stdout()
    assert "stopping in 1.5 s (drain-time)" in log
    assert "Traceback" not in log, log

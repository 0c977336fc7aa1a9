"""Many concurrent downloads of one URL, in a process of their own, so that the clients'
clock readings wait for no other work of the test (its upstream, its servers).

`python -m tests.support.downloads URL COUNT SECONDS` prints one JSON line per download:
the status, when its first byte arrived (time.monotonic, the same clock in every process
of the machine), how many bytes, their sha256, and the error that cut it short, if any.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from pathlib import Path

import aiohttp
import msgspec


class Received(msgspec.Struct, frozen=True):
    status: int
    first_byte: float | None
    size: int
    sha256: str
    error: str | None


async def _download(http: aiohttp.ClientSession, url: str) -> Received:
    digest, size, first, error = hashlib.sha256(), 0, None, None
    async with http.get(url) as response:
        try:
            async for chunk in response.content.iter_any():
                first = first or time.monotonic()
                digest.update(chunk)
                size += len(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            error = repr(exc)
        return Received(response.status, first, size, digest.hexdigest(), error)


async def _main(url: str, count: int, seconds: float) -> None:
    connector = aiohttp.TCPConnector(limit=count)
    timeout = aiohttp.ClientTimeout(total=seconds)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        received = await asyncio.gather(*(_download(http, url) for _ in range(count)))
    for one in received:
        sys.stdout.buffer.write(msgspec.json.encode(one) + b"\n")


async def many(url: str, count: int, seconds: float) -> list[Received]:
    """`count` concurrent downloads of `url` in a child process, each within `seconds`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        url,
        str(count),
        str(seconds),
        cwd=Path(__file__).parents[2],  # where `tests` is a package
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), seconds + 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"the downloads exited with {process.returncode}"
    return [msgspec.json.decode(line, type=Received) for line in stdout.splitlines()]


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))

"""`mypypi2 serve` as a process: it outlives a killed worker, other clients get through
while connections hang half-sent, start-up failures are one line, each log line is written
once.

Servers start from conftest's `launch` fixture: a session of their own, stopped
whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import msgspec
import pytest

from mypypi2.config import SERVERS
from tests.local_upstream import Fault, LocalUpstream
from tests.support import waiting
from tests.support.cache import free_port
from tests.support.database import with_database
from tests.support.process import (
    Launch,
    Server,
    add_demo,
    clean_environ,
    get_as_pip,
    mypypi2,
    write_config,
)

# Bounds on waiting, not assertions on speed.
POLLS = 600  # x 0.1 s
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=20)
# A request line and some headers, never the blank line that ends them.
HALF_SENT = b"GET /-/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"


def cache_config(tmp_path: Path, database: str, upstream: LocalUpstream, **server: object) -> None:
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": database},
            "server": server,
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )


def port_of(server: Server) -> int:
    port = urlsplit(server.url).port
    assert port is not None
    return port


def _listening_sockets(port: int) -> set[str]:
    """The listening sockets on `port`, as /proc/PID/fd links name them."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                # "sl local_address rem_address st ... inode": 0A is LISTEN
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(f"socket:[{fields[9]}]")
    return found


def workers(server: Server) -> list[int]:
    """The worker processes: the children of `serve` that hold its listening socket."""
    listening = _listening_sockets(port_of(server))
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(parent) != server.process.pid or state == "Z":
                continue
            descriptors = {os.readlink(fd) for fd in (stat.parent / "fd").iterdir()}
        except (OSError, ValueError):
            continue  # gone meanwhile
        if descriptors & listening:
            found.append(int(stat.parent.name))
    return sorted(found)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """The shared wait, at this module's slower pace: workers take seconds to start."""
    await waiting.eventually(condition, what, polls=POLLS, interval=0.1)


# --- a dead worker is replaced ---------------------------------------------------------


@pytest.mark.parametrize("server_name", SERVERS)
async def test_a_killed_worker_is_replaced_while_the_others_keep_answering(
    server_name: str, launch: Launch, upstream: LocalUpstream, database: str, tmp_path: Path
) -> None:
    add_demo(upstream)
    cache_config(tmp_path, database, upstream)
    server = await launch(tmp_path, clean_environ(), "--workers", "2", "--server", server_name)
    page = f"{server.url}/pypi/simple/demo/"
    assert (await get_as_pip(page))[0] == 200
    await eventually(lambda: len(workers(server)) == 2, "two workers listen")
    victim = workers(server)[0]

    # A client that keeps asking, each time on a new connection (any worker may take it).
    outcomes: list[int | str] = []
    stop = asyncio.Event()

    async def ask() -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as http:
            while not stop.is_set():
                try:
                    async with http.get(page) as response:
                        await response.read()
                        outcomes.append(response.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcomes.append(type(exc).__name__)
                await asyncio.sleep(0.02)

    client = asyncio.create_task(ask())
    try:
        await eventually(lambda: len(outcomes) >= 5, "the client got answers")
        os.kill(victim, signal.SIGKILL)  # what the OOM killer does
        await eventually(
            lambda: victim not in workers(server) and len(workers(server)) == 2,
            "a new worker replaced the killed one",
        )
        # Requests in flight on the dead worker may have failed; from now on none may.
        recovered = len(outcomes)
        await eventually(lambda: len(outcomes) >= recovered + 50, "50 more answers")
    finally:
        stop.set()
        await client

    assert server.process.returncode is None, server.stderr()
    assert outcomes[recovered:] == [200] * (len(outcomes) - recovered), outcomes[recovered:]
    assert len(workers(server)) == 2
    assert await server.stop() == 0, server.stderr()
    assert not server.leftovers


# --- slowloris -----------------------------------------------------------------------------


async def open_half_sent(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HALF_SENT)
        writers.append(writer)
    for writer in writers:
        await writer.drain()
    return writers


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def enough_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.mark.parametrize("server_name", SERVERS)
async def test_connections_that_never_finish_their_headers_lock_nobody_out(
    server_name: str, launch: Launch, upstream: LocalUpstream, database: str, tmp_path: Path
) -> None:
    # More than granian's old cap (1,024 connections over all workers, held for 30 s).
    attackers = 1100
    enough_open_files(attackers + 1024)
    cache_config(tmp_path, database, upstream)
    server = await launch(tmp_path, clean_environ(), "--workers", "2", "--server", server_name)

    writers = await open_half_sent(port_of(server), attackers)
    try:
        # A new client, on a new connection, is answered while they all hang.
        async with (
            aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as http,
            http.get(f"{server.url}/-/health") as response,
        ):
            assert response.status == 200
    finally:
        await close_all(writers)


@pytest.mark.parametrize("server_name", SERVERS)
async def test_a_connection_that_never_finishes_its_headers_is_closed(
    server_name: str, launch: Launch, upstream: LocalUpstream, database: str, tmp_path: Path
) -> None:
    cache_config(tmp_path, database, upstream, **{"header-timeout": 1.0})
    server = await launch(tmp_path, clean_environ(), "--workers", "1", "--server", server_name)

    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    try:
        writer.write(HALF_SENT)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), POLLS * 0.1)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    # Closed, at most with a 408 first: never answered as if the request were complete.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer


# --- start-up failures ---------------------------------------------------------------------


Setup = Callable[[Path, str], Awaitable[dict[str, object]]]


async def _unreachable_database(tmp_path: Path, postgres_dsn: str) -> dict[str, object]:
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/cache"
    return {"database": {"url": url}}


async def _missing_database(tmp_path: Path, postgres_dsn: str) -> dict[str, object]:
    return {"database": {"url": with_database(postgres_dsn, "mypypi2_no_such_database")}}


async def _data_dir_is_a_file(tmp_path: Path, postgres_dsn: str) -> dict[str, object]:
    (tmp_path / "data").write_text("")
    return {"database": {"url": ""}}  # the embedded PostgreSQL would live in data-dir


async def _storage_not_creatable(tmp_path: Path, postgres_dsn: str) -> dict[str, object]:
    (tmp_path / "blocker").write_text("")
    return {"storage": {"path": str(tmp_path / "blocker" / "files")}}


@pytest.mark.parametrize(
    ("setup", "named"),
    [
        pytest.param(_unreachable_database, "cannot use the database", id="database-unreachable"),
        pytest.param(_missing_database, "does not exist", id="database-missing"),
        pytest.param(_data_dir_is_a_file, "is not a directory", id="data-dir-is-a-file"),
        pytest.param(_storage_not_creatable, "cannot use the file store", id="storage-path"),
    ],
)
async def test_a_failed_start_is_one_line(
    setup: Setup, named: str, database: str, postgres_dsn: str, tmp_path: Path
) -> None:
    settings: dict[str, object] = {
        "data-dir": str(tmp_path / "data"),
        "database": {"url": database},
        "repositories": [{"name": "pypi", "upstream": "https://upstream.example/simple/"}],
    }
    settings.update(await setup(tmp_path, postgres_dsn))
    write_config(tmp_path, settings)

    finished = await mypypi2("serve", "--port", str(free_port()), "--workers", "1", cwd=tmp_path)

    assert finished.returncode == 1, finished.stderr
    assert finished.stdout == ""
    assert finished.stderr.count("\n") == 1, finished.stderr
    assert finished.stderr.startswith("mypypi2: ")
    assert named in finished.stderr
    assert "s3cret" not in finished.stderr


@pytest.mark.parametrize("server_name", SERVERS)
async def test_a_port_in_use_is_one_line(server_name: str, database: str, tmp_path: Path) -> None:
    write_config(tmp_path, {"data-dir": str(tmp_path / "data"), "database": {"url": database}})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        finished = await mypypi2(
            "serve", "--port", str(port), "--server", server_name, cwd=tmp_path
        )

    assert finished.returncode == 1, finished.stderr
    assert finished.stderr == (
        f"mypypi2: cannot listen on 127.0.0.1:{port}: Address already in use"
        " (is another server running?)\n"
    )


# --- logs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize(
    ("server_name", "listening", "times"),
    [("granian", "Listening at: ", 1), ("hypercorn", "Running on ", 2)],  # 2: once per worker
)
async def test_each_log_line_is_written_once(
    server_name: str,
    listening: str,
    times: int,
    log_format: str,
    launch: Launch,
    upstream: LocalUpstream,
    database: str,
    tmp_path: Path,
) -> None:
    upstream.fail("/simple/broken/", Fault(status=500))
    cache_config(tmp_path, database, upstream)
    environ = clean_environ(MYPYPI2_LOGGING__FORMAT=log_format)
    server = await launch(tmp_path, environ, "--workers", "2", "--server", server_name)

    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{server.url}/pypi/simple/broken/", headers={"X-Request-Id": "broken-page-1"}
        ) as response,
    ):
        assert response.status == 502
        assert response.headers["X-Request-Id"] == "broken-page-1"
        # An id of its own for a request that brings none (or one not fit for a log line).
        async with http.get(f"{server.url}/-/health", headers={"X-Request-Id": "a b"}) as health:
            generated = health.headers["X-Request-Id"]
    assert generated not in ("", "a b")

    assert await server.stop() == 0, server.stderr()
    stdout, stderr = server.stdout().splitlines(), server.stderr().splitlines()
    lines = stdout + stderr
    # One access line per request, on stdout, and nothing else of the server's per request.
    [access] = [line for line in lines if "broken-page-1" in line]
    assert access in stdout
    [_health] = [line for line in lines if generated in line]
    assert sum("/pypi/simple/broken/" in line for line in lines) == 1, lines
    # The upstream's failure is logged once, where it was met.
    assert sum("cannot refresh pypi/broken: " in line and "HTTP 500" in line for line in lines) == 1
    assert sum(listening in line for line in lines) == times, lines
    if log_format == "text":
        assert '"GET /pypi/simple/broken/" 502 ' in access
        assert " id=broken-page-1 repository=pypi kind=page outcome=error " in access
        return
    # Every line of every process, ours, the server's and the libraries', is JSON.
    records = [msgspec.json.decode(line) for line in lines]
    [line] = [r for r in records if r.get("request_id") == "broken-page-1"]
    assert line["path"] == "/pypi/simple/broken/"
    assert (line["status"], line["repository"], line["outcome"]) == (502, "pypi", "error")
    assert line["bytes"] > 0 and line["duration_ms"] > 0
    assert any("caches" in r.get("message", "") for r in records)


# --- Kubernetes ------------------------------------------------------------------------------


async def test_serve_starts_with_the_variables_kubernetes_injects(
    launch: Launch, upstream: LocalUpstream, database: str, tmp_path: Path
) -> None:
    # What a pod gets for a Service named mypypi2: they share our prefix, name no key.
    environ = clean_environ(
        MYPYPI2_PORT="tcp://10.0.0.1:8000",
        MYPYPI2_PORT_8000_TCP="tcp://10.0.0.1:8000",
        MYPYPI2_PORT_8000_TCP_ADDR="10.0.0.1",
        MYPYPI2_PORT_8000_TCP_PORT="8000",
        MYPYPI2_PORT_8000_TCP_PROTO="tcp",
        MYPYPI2_SERVICE_HOST="10.0.0.1",
        MYPYPI2_SERVICE_PORT="8000",
    )
    cache_config(tmp_path, database, upstream)

    server = await launch(tmp_path, environ, "--workers", "1")

    status, _, _ = await get_as_pip(f"{server.url}/-/health")
    assert status == 200
    assert await server.stop() == 0, server.stderr()
    assert "MYPYPI2_" not in server.stderr()


async def test_migrate_with_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    write_config(
        tmp_path, {"database": {"url": f"postgresql://postgres:hunter2@127.0.0.1:{port}/cache"}}
    )

    finished = await mypypi2("migrate", cwd=tmp_path)

    assert finished.returncode == 1
    shown = f"postgresql://postgres:<redacted>@127.0.0.1:{port}/cache"
    assert finished.stderr.startswith(f"mypypi2: cannot use the database {shown}: ")
    assert "hunter2" not in finished.stderr
    assert finished.stderr.count("\n") == 1, finished.stderr

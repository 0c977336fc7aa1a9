"""`python -m mypypi2` as real processes: config, migrate, and serve under granian and
hypercorn, with the real pip as the client.

Every process runs through asyncio so the test's event loop keeps serving the local
upstream meanwhile. Servers start in a session of their own: whatever happens in a test,
the `launch` fixture stops them (SIGINT, then SIGTERM, then SIGKILL to the whole session).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
import tomli_w

from mypypi2 import config
from mypypi2.config import Config
from tests.local_upstream import LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.cache import free_port
from tests.support.database import scratch_database

ROOT = Path(__file__).resolve().parents[2]
JSON_V1 = "application/vnd.pypi.simple.v1+json"
# What pip sends for a project page (pip/_internal/index/collector.py).
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
DEMO_FILES = ("demo-1.0.tar.gz", "demo-1.1-py3-none-any.whl", "demo-2.0.tar.gz")
DEMO_VERSIONS = ["2.0", "1.1", "1.0"]  # newest first, as pip lists them
# Bounds on waiting for a process, not assertions on how long it takes.
STARTUP_POLLS = 1200  # x 0.1 s
STOP_WAIT = 30.0
STOP_POLLS = 100  # x 0.1 s


def clean_environ(**variables: str) -> dict[str, str]:
    """Our environment without MYPYPI2_* and PIP_* settings, and pip's config files off."""
    environ = {
        key: value for key, value in os.environ.items() if not key.startswith(("MYPYPI2_", "PIP_"))
    }
    environ.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_CACHE_DIR="1",
        PIP_NO_INPUT="1",
    )
    environ.update(variables)
    return environ


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def run(*args: str, cwd: Path, environ: dict[str, str]) -> Finished:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())


async def mypypi2(*args: str, cwd: Path, environ: dict[str, str] | None = None) -> Finished:
    return await run(
        sys.executable, "-m", "mypypi2", *args, cwd=cwd, environ=environ or clean_environ()
    )


def write_config(directory: Path, settings: dict[str, Any]) -> Path:
    path = directory / "config.toml"
    path.write_text(tomli_w.dumps(settings))
    return path


def add_demo(upstream: LocalUpstream) -> UpstreamProject:
    return upstream.add(
        UpstreamProject("demo", [UpstreamFile(name, content=name.encode()) for name in DEMO_FILES])
    )


# --- config ------------------------------------------------------------------------------


async def test_config_show_prints_the_resolved_settings(tmp_path: Path) -> None:
    settings = {
        "data-dir": "state",
        "server": {"port": 8080, "server": "hypercorn", "base-url": "/mirror"},
        "database": {"url": "postgresql://cache@db.example/cache"},
        "repositories": [
            {"name": "pypi", "upstream": "https://upstream.example/simple/", "ttl": 60.0},
            {
                "name": "private",
                "upstream": "https://private.example/simple/",
                "username": "reader",
                "headers": {"X-Token": "abc"},
            },
        ],
    }
    path = write_config(tmp_path, settings)
    environ = clean_environ(MYPYPI2_REPOSITORIES__PRIVATE__PASSWORD="from-env")

    redacted = await mypypi2("config", "--show", cwd=tmp_path, environ=environ)
    assert redacted.returncode == 0, redacted.stderr
    assert "from-env" not in redacted.stdout
    assert "abc" not in redacted.stdout

    shown = await mypypi2("config", "--show", "--show-secrets", cwd=tmp_path, environ=environ)

    assert shown.returncode == 0, shown.stderr
    printed = msgspec.convert(tomllib.loads(shown.stdout), Config)
    assert printed == config.load(path, environ)
    assert printed.server.port == 8080
    assert printed.repository("private") is not None
    assert printed.repositories[1].password == "from-env"
    assert printed.repositories[1].headers == {"X-Token": "abc"}


async def test_config_option_names_the_file(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "mypypi2.yaml").write_text("server:\n  port: 9123\n")

    shown = await mypypi2("--config", str(elsewhere / "mypypi2.yaml"), "config", cwd=tmp_path)

    assert shown.returncode == 0, shown.stderr
    assert tomllib.loads(shown.stdout)["server"]["port"] == 9123


@pytest.mark.parametrize(
    ("files", "variables", "arguments", "named"),
    [
        pytest.param({"config.toml": "[server]\nbogus = 1\n"}, {}, (), "bogus", id="unknown-key"),
        pytest.param(
            {"config.toml": '[server]\nport = "x"\n'}, {}, (), "server.port", id="wrong-type"
        ),
        pytest.param(
            {"config.toml": '[[repositories]]\nname = "a"\nupstream = "ftp://x.example/"\n'},
            {},
            (),
            "upstream",
            id="bad-upstream",
        ),
        pytest.param({"config.yaml": "server: [\n"}, {}, (), "not valid yaml", id="yaml-syntax"),
        pytest.param(
            {"config.toml": "", "config.json": "{}"},
            {},
            (),
            "several config files",
            id="two-files",
        ),
        pytest.param(
            {}, {"MYPYPI2_SERVER__PORT": "abc"}, (), "MYPYPI2_SERVER__PORT", id="bad-env-value"
        ),
        pytest.param({}, {}, ("serve", "--port", "0"), "port", id="serve-bad-port"),
    ],
)
async def test_a_bad_config_exits_2_with_one_line(
    tmp_path: Path,
    files: dict[str, str],
    variables: dict[str, str],
    arguments: tuple[str, ...],
    named: str,
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    finished = await mypypi2(
        *(arguments or ("config", "--show")), cwd=tmp_path, environ=clean_environ(**variables)
    )

    assert finished.returncode == 2
    assert finished.stdout == ""
    lines = finished.stderr.splitlines()
    assert len(lines) == 1, finished.stderr
    assert lines[0].startswith("mypypi2: ")
    assert named in lines[0]


async def test_an_unknown_env_variable_is_one_warning_not_a_failed_start(tmp_path: Path) -> None:
    environ = clean_environ(
        MYPYPI2_SERVR__PORT="1",
        # Injected by Kubernetes for a Service named mypypi2: not even a warning.
        MYPYPI2_PORT="tcp://10.0.0.1:8000",
        MYPYPI2_SERVICE_HOST="10.0.0.1",
    )

    finished = await mypypi2("config", "--show", cwd=tmp_path, environ=environ)

    assert finished.returncode == 0, finished.stderr
    assert "[server]" in finished.stdout
    warnings = [line for line in finished.stderr.splitlines() if "MYPYPI2_" in line]
    assert warnings == [
        "WARNING mypypi2.config: ignoring MYPYPI2_SERVR__PORT: it names no configuration key"
    ]


# --- migrate -----------------------------------------------------------------------------


@pytest.fixture
async def empty_database(postgres_dsn: str) -> AsyncIterator[str]:
    """A database that has never been migrated (the `database` fixture's clones are)."""
    async with scratch_database(postgres_dsn, template=None) as dsn:
        yield dsn


async def _table_exists(dsn: str, table: str) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table) is True
    finally:
        await connection.close()


async def test_migrate_applies_every_migration_once(tmp_path: Path, empty_database: str) -> None:
    write_config(tmp_path, {"database": {"url": empty_database}})
    migrations = [p for p in (ROOT / "sql").glob("*.sql") if not p.name.endswith(".rollback.sql")]
    assert migrations
    assert not await _table_exists(empty_database, "projects")

    first = await mypypi2("migrate", cwd=tmp_path)
    second = await mypypi2("migrate", cwd=tmp_path)

    assert first.returncode == 0, first.stderr
    assert first.stdout == f"applied {len(migrations)} migration(s)\n"
    assert await _table_exists(empty_database, "projects")
    assert second.returncode == 0, second.stderr
    assert second.stdout == "applied 0 migration(s)\n"


async def test_migrate_on_a_migrated_database_applies_nothing(
    tmp_path: Path, database: str
) -> None:
    write_config(tmp_path, {"database": {"url": database}})

    finished = await mypypi2("migrate", cwd=tmp_path)

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == "applied 0 migration(s)\n"


# --- serve -------------------------------------------------------------------------------


class Server:
    """One `mypypi2 serve` process (and its workers, in a session of their own)."""

    def __init__(
        self, process: asyncio.subprocess.Process, port: int, logs: Path, postgres: Path | None
    ) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.logs = logs
        self.postgres = postgres
        # Processes of the session still alive once the main process has exited.
        self.leftovers = False

    def stdout(self) -> str:
        return (self.logs / "stdout").read_text()

    def stderr(self) -> str:
        return (self.logs / "stderr").read_text()

    async def wait_until_healthy(self) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(STARTUP_POLLS):
                if self.process.returncode is not None:
                    raise AssertionError(
                        f"serve exited with {self.process.returncode}:\n{self.stderr()}"
                    )
                try:
                    async with session.get(f"{self.url}/-/health") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"serve never answered on {self.url}:\n{self.stderr()}")

    async def stop(self) -> int:
        """SIGINT (Ctrl-C), then SIGTERM, then SIGKILL; returns the exit status."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            if self.process.returncode is not None:
                break
            self.process.send_signal(signum)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_WAIT)
            except TimeoutError:
                continue
        if self.process.returncode is None:
            self._kill_session()
            await self.process.wait()
        # Helpers such as multiprocessing's resource tracker exit when they see their parent
        # gone; give them a moment, then nothing of the session may still run.
        for _ in range(STOP_POLLS):
            if not self.session_alive():
                break
            await asyncio.sleep(0.1)
        else:
            self.leftovers = True
            self._kill_session()
        assert self.process.returncode is not None
        return self.process.returncode

    def session_alive(self) -> bool:
        """Whether a process of the session still runs (zombies wait for init to reap them)."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid pgrp ...": comm may contain spaces, so split after ")".
                state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            if int(group) == self.process.pid and state != "Z":
                return True
        return False

    def _kill_session(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop_embedded_postgres(self) -> None:
        """Last resort when serve died without stopping the PostgreSQL it started."""
        pid_file = None if self.postgres is None else self.postgres / "postmaster.pid"
        if pid_file is not None and pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)


Launch = Callable[..., Awaitable[Server]]


def _open_logs(logs: Path) -> tuple[int, int]:
    logs.mkdir(parents=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    return os.open(logs / "stdout", flags), os.open(logs / "stderr", flags)


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start `mypypi2 serve` in a directory; every server is stopped when the test ends."""
    servers: list[Server] = []

    async def start(
        cwd: Path, environ: dict[str, str], *options: str, postgres: Path | None = None
    ) -> Server:
        port = free_port()
        logs = tmp_path / f"serve-{len(servers)}"
        stdout, stderr = _open_logs(logs)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "mypypi2",
                "serve",
                "--port",
                str(port),
                *options,
                cwd=cwd,
                env=environ,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            os.close(stdout)
            os.close(stderr)
        server = Server(process, port, logs, postgres)
        servers.append(server)
        await server.wait_until_healthy()
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.stop()
            server.stop_embedded_postgres()


async def get(url: str, accept: str = PIP_ACCEPT) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": accept}, allow_redirects=False) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def _listed_versions(pip_stdout: str) -> list[str]:
    # "demo (2.0)\nAvailable versions: 2.0, 1.1, 1.0\n"
    line = next(line for line in pip_stdout.splitlines() if line.startswith("Available versions:"))
    return [version.strip() for version in line.split(":", 1)[1].split(",")]


@pytest.mark.parametrize("server_name", ["granian", "hypercorn"])
async def test_serve_answers_the_real_pip(
    server_name: str,
    launch: Launch,
    upstream: LocalUpstream,
    database: str,
    tmp_path: Path,
) -> None:
    project = add_demo(upstream)
    write_config(
        tmp_path,
        {
            "data-dir": str(tmp_path / "data"),
            "database": {"url": database},
            "repositories": [{"name": "pypi", "upstream": upstream.url}],
        },
    )

    server = await launch(tmp_path, clean_environ(), "--workers", "2", "--server", server_name)
    index_url = f"{server.url}/pypi/simple/"
    assert f"--index-url {index_url}" in server.stdout()

    pip = await run(
        sys.executable,
        "-m",
        "pip",
        "index",
        "versions",
        "demo",
        "--index-url",
        index_url,
        cwd=tmp_path,
        environ=clean_environ(),
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert _listed_versions(pip.stdout) == DEMO_VERSIONS

    status, headers, body = await get(f"{index_url}demo/")
    assert status == 200
    assert headers["Content-Type"] == JSON_V1
    assert "Date" in headers  # RFC 9110 6.6.1: origin servers with a clock send one
    page = json.loads(body)
    assert page["name"] == "demo"
    assert {f["filename"]: f["hashes"]["sha256"] for f in page["files"]} == {
        f.filename: f.sha256 for f in project.files
    }
    for file in page["files"]:
        assert file["url"].endswith(f"/{file['filename']}")
    # pip's request filled the database; the second request (any worker) is served from it.
    assert upstream.hits["/simple/demo/"] == 1

    # Files: the first request downloads, later ones come from the store (under granian,
    # with zero-copy from the warm path once the worker knows the file is stored).
    wanted = project.files[0]
    for _ in range(6):
        status, raw, body = await get(f"{server.url}/pypi/files/demo/{wanted.filename}")
        headers = {name.lower(): value for name, value in raw.items()}
        assert status == 200
        assert body == wanted.content
        assert headers["etag"] == f'"{wanted.sha256}"'
        assert headers["content-length"] == str(len(wanted.content))
        assert "immutable" in headers["cache-control"]
    assert upstream.hits[f"/files/demo/{wanted.filename}"] == 1

    assert server.session_alive()
    assert await server.stop() == 0, server.stderr()
    assert not server.leftovers
    assert not server.session_alive()


async def test_zero_config_serve_keeps_everything_across_restarts(
    launch: Launch, upstream: LocalUpstream, tmp_path: Path
) -> None:
    add_demo(upstream)
    workdir = tmp_path / "empty"
    workdir.mkdir()
    data = tmp_path / "data"
    environ = clean_environ(MYPYPI2_DATA_DIR=str(data), PIP_INDEX_URL=upstream.url)

    first = await launch(workdir, environ, "--workers", "1", postgres=data / "postgres")
    assert f"caches {upstream.url}" in first.stdout()
    assert f"--index-url {first.url}/pypi/simple/" in first.stdout()
    assert (data / "postgres" / "PG_VERSION").is_file()  # the embedded PostgreSQL's cluster
    status, _, body = await get(f"{first.url}/pypi/simple/demo/")
    assert status == 200, first.stderr()
    page = json.loads(body)
    assert sorted(f["filename"] for f in page["files"]) == sorted(DEMO_FILES)

    assert await first.stop() == 0, first.stderr()
    assert not first.leftovers
    # PostgreSQL was stopped too
    assert not (data / "postgres" / "postmaster.pid").exists(), first.stderr()

    await upstream.stop()
    second = await launch(workdir, environ, "--workers", "1", postgres=data / "postgres")
    status, _, body = await get(f"{second.url}/pypi/simple/demo/")
    assert status == 200, second.stderr()
    assert json.loads(body) == page

    assert await second.stop() == 0, second.stderr()
    assert list(workdir.iterdir()) == []  # nothing written outside data-dir

"""`python -m mypypi2` as a real process: its environment, its config file, `serve` and
its session of workers, stopped for sure (SIGINT, then SIGTERM, then SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import tomli_w

from tests.local_upstream import LocalUpstream, UpstreamFile, UpstreamProject
from tests.support.cache import free_port

# What pip sends for a project page (pip/_internal/index/collector.py).
PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
DEMO_FILES = ("demo-1.0.tar.gz", "demo-1.1-py3-none-any.whl", "demo-2.0.tar.gz")
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


class Launcher:
    """Starts `mypypi2 serve` in a directory, its logs under `logs_dir`; the `launch`
    fixture calls `stop_all` when the test ends, whatever happened in it."""

    def __init__(self, logs_dir: Path) -> None:
        self._logs_dir = logs_dir
        self._servers: list[Server] = []

    async def __call__(
        self, cwd: Path, environ: dict[str, str], *options: str, postgres: Path | None = None
    ) -> Server:
        port = free_port()
        logs = self._logs_dir / f"serve-{len(self._servers)}"
        stdout, stderr = open_logs(logs)
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
        self._servers.append(server)
        await server.wait_until_healthy()
        return server

    async def stop_all(self) -> None:
        for server in self._servers:
            await server.stop()
            server.stop_embedded_postgres()


def open_logs(logs: Path) -> tuple[int, int]:
    logs.mkdir(parents=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    return os.open(logs / "stdout", flags), os.open(logs / "stderr", flags)


async def get_as_pip(url: str, accept: str = PIP_ACCEPT) -> tuple[int, dict[str, str], bytes]:
    """GET on a session of its own, as pip asks for a page; redirects not followed."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": accept}, allow_redirects=False) as response,
    ):
        return response.status, dict(response.headers), await response.read()

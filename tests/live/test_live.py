"""The zero-config default against the real index this machine's pip uses (opt-in).

`mypypi2 serve` runs with no configuration at all: no file, no MYPYPI2_* variable, so its
one repository caches whatever index pip is configured with here (found at run time, never
named in this file) and its database is an embedded PostgreSQL in the data directory. pip,
uv and poetry then install real packages through it, each isolated from this machine's
configuration and behind the ProxyTrap of tests/clients.py: a client request that tries to
go anywhere but the cache is refused and fails the test.

Run: MYPYPI2_LIVE=1 .venv/bin/pytest -m live tests/live
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.clients import Env, ProxyTrap, isolated_env, new_venv, poetry_install, run
from tests.support.cache import free_port
from tests.support.process import Server

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(os.environ.get("MYPYPI2_LIVE") != "1", reason="set MYPYPI2_LIVE=1"),
    pytest.mark.timeout(900),
]

BIN = Path(sys.executable).parent
PIP = (sys.executable, "-m", "pip")
# requests' last release before this instant is 2.31.0 (2023-05-22); 2.32.0 followed in 2024.
BEFORE_2024 = "2024-01-01T00:00:00Z"


@pytest.fixture(scope="module")
async def index(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The index URL of a zero-config `mypypi2 serve` on a free loopback port."""
    home = tmp_path_factory.mktemp("live-serve")
    logs = home / "logs"
    logs.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MYPYPI2_")}
    port = free_port()
    with (
        open(logs / "stdout", "wb") as stdout,  # noqa: ASYNC230 - the child writes to them
        open(logs / "stderr", "wb") as stderr,  # noqa: ASYNC230
    ):
        process = await asyncio.create_subprocess_exec(
            str(BIN / "mypypi2"), "serve", "--port", str(port),
            cwd=home, env=environ, stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout, stderr=stderr, start_new_session=True,
        )  # fmt: skip
    server = Server(process, port, logs, home / "data" / "postgres")
    try:
        await server.wait_until_healthy()
        # The upstream it found is a real index, not something on this machine.
        found = re.search(r"caches (\S+)", server.stdout())
        assert found is not None, server.stdout()
        assert urlsplit(found.group(1)).hostname not in (None, "127.0.0.1", "localhost")
        yield f"{server.url}/pypi/simple/"
    finally:
        await server.stop()
        server.stop_embedded_postgres()
    assert not server.leftovers


@pytest.fixture
def work(tmp_path: Path, proxy_trap: ProxyTrap) -> tuple[Path, Env]:
    return tmp_path, isolated_env(tmp_path / "home", proxy_trap)


def pip_env(env: Env) -> Env:
    return env | {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def uv_env(env: Env) -> Env:
    return env | {"UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}


async def check_imports(python: Path, modules: str, cwd: Path, env: Env) -> None:
    await run(python, "-I", "-c", f"import {modules}", cwd=cwd, env=env)


async def test_pip_installs_packages_with_dependencies(
    index: str, work: tuple[Path, Env], proxy_trap: ProxyTrap
) -> None:
    path, env = work
    python = await new_venv(path / "venv", env)
    await run(
        *PIP, "--python", python, "install", "--no-cache-dir", "--index-url", index,
        "six", "idna", "requests",
        cwd=path, env=pip_env(env),
    )  # fmt: skip
    await check_imports(python, "six, idna, requests, urllib3, certifi", path, env)
    assert proxy_trap.requests == []


async def test_pip_builds_an_sdist_with_build_requirements_from_the_cache(
    index: str, work: tuple[Path, Env], proxy_trap: ProxyTrap
) -> None:
    path, env = work
    python = await new_venv(path / "venv", env)
    # The sdist's build backend (setuptools) is installed from the cache as well.
    output = await run(
        *PIP, "--python", python, "install", "--no-cache-dir", "--index-url", index,
        "--no-binary", "six", "six",
        cwd=path, env=pip_env(env),
    )  # fmt: skip
    assert re.search(r"six-[0-9.]+\.tar\.gz", output), output
    await check_imports(python, "six", path, env)
    assert proxy_trap.requests == []


async def test_uv_installs_packages_with_dependencies(
    index: str, work: tuple[Path, Env], proxy_trap: ProxyTrap
) -> None:
    path, env = work
    python = await new_venv(path / "venv", env)
    await run(
        BIN / "uv", "pip", "install", "--python", python, "--index-url", index,
        "--cache-dir", path / "uv-cache", "requests",
        cwd=path, env=uv_env(env),
    )  # fmt: skip
    await check_imports(python, "requests, idna, urllib3, certifi, charset_normalizer", path, env)
    assert proxy_trap.requests == []


async def test_uv_compiles_plain_and_exclude_newer_then_pip_requires_the_hashes(
    index: str, work: tuple[Path, Env], proxy_trap: ProxyTrap
) -> None:
    path, env = work
    (path / "requirements.in").write_text("requests\n")
    compile_ = (
        BIN / "uv", "pip", "compile", "requirements.in", "--index-url", index,
        "--cache-dir", path / "uv-cache", "--no-header",
    )  # fmt: skip
    latest = await run(*compile_, cwd=path, env=uv_env(env))
    assert re.search(r"^requests==\d", latest, re.MULTILINE), latest

    # Needs every file's upload-time, passed through from the upstream's JSON (PEP 700).
    old = await run(
        *compile_, "--exclude-newer", BEFORE_2024, "--generate-hashes",
        "--output-file", "requirements.txt",
        cwd=path, env=uv_env(env),
    )  # fmt: skip
    locked = (path / "requirements.txt").read_text()
    assert re.search(r"^requests==2\.31\.0 ", locked, re.MULTILINE), old + locked
    assert "--hash=sha256:" in locked

    # pip checks every downloaded file against the hashes uv read from our pages.
    python = await new_venv(path / "venv", env)
    await run(
        *PIP, "--python", python, "install", "--no-cache-dir", "--index-url", index,
        "--require-hashes", "--only-binary", ":all:", "-r", "requirements.txt",
        cwd=path, env=pip_env(env),
    )  # fmt: skip
    version = await run(
        python, "-I", "-c", "import requests; print(requests.__version__)", cwd=path, env=env
    )
    assert version.strip() == "2.31.0"
    assert proxy_trap.requests == []


async def test_poetry_locks_and_installs(
    index: str, work: tuple[Path, Env], proxy_trap: ProxyTrap
) -> None:
    path, env = work
    python = await poetry_install(index, path, env, ("requests", "six"))
    await check_imports(python, "requests, six", path, env)
    assert proxy_trap.requests == []

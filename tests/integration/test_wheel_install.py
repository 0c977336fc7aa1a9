"""mypypi2 as a user gets it: the wheel, installed (not editable) into a clean venv, run from
a directory with no checkout in it, so every module, migration and entry point must come
from the wheel.

The wheel is built from a copy of this work tree (building in place would leave build/ and
*.egg-info behind). Its dependencies come from the index pip is set up with, once per
machine and per dependency list, into a wheelhouse that later runs install from offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest

from tests.clients import APP_WHEEL
from tests.local_upstream import JSON_V1, LocalUpstream, UpstreamProject
from tests.peers import check_call, machine_cache
from tests.support.cache import free_port
from tests.support.database import scratch_database
from tests.support.process import Server, clean_environ, run

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from: pyproject.toml names every package and where sql/ goes.
SOURCES = ("pyproject.toml", "README.md", "mypypi2", "sql")
MIGRATIONS = sorted(p.name for p in (ROOT / "sql").glob("*.sql") if ".rollback." not in p.name)

# Building the wheel and filling a wheelhouse on a fresh machine take a minute or two.
pytestmark = pytest.mark.timeout(900)


def _requires_dist(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    return sorted(
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )


def _build_wheelhouse(wheel: Path) -> Path:
    def build(directory: Path) -> None:
        check_call(
            [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
             "-w", directory, wheel],
            "downloading mypypi2's dependencies",
        )  # fmt: skip
        for own in directory.glob("mypypi2-*.whl"):  # the wheel under test is given by path
            own.unlink()

    return machine_cache("mypypi2-wheelhouse", _requires_dist(wheel), build)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a clean venv with the wheel of this work tree installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(ROOT / name, source / name, ignore=ignored)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = work / "dist"
    check_call(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "--no-deps", "-w", dist, source],
        "building the wheel",
    )  # fmt: skip
    (wheel,) = dist.glob("mypypi2-*.whl")
    wheelhouse = _build_wheelhouse(wheel)
    venv = work / "venv"
    # No pip inside (ensurepip is the slow part of a venv): this pip installs into it.
    check_call([sys.executable, "-m", "venv", "--without-pip", venv], "the clean venv")
    check_call(
        [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q",
         "--disable-pip-version-check", "--no-index", "--find-links", wheelhouse, wheel],
        "installing the wheel",
    )  # fmt: skip
    return venv / "bin"


async def test_the_installed_wheel_migrates_and_serves(
    installed: Path, postgres_dsn: str, upstream: LocalUpstream, tmp_path: Path
) -> None:
    upstream.add(UpstreamProject("app", [APP_WHEEL]))
    cwd = tmp_path / "run"
    cwd.mkdir()
    environ = {k: v for k, v in clean_environ().items() if k != "PYTHONPATH"}

    imported = await run(
        str(installed / "python"), "-c", "import mypypi2; print(mypypi2.__file__)",
        cwd=cwd, environ=environ,
    )  # fmt: skip
    assert Path(imported.stdout.strip()).is_relative_to(installed.parent), imported.stdout

    async with scratch_database(postgres_dsn, None) as dsn:
        environ |= {
            "MYPYPI2_DATABASE__URL": dsn,
            "MYPYPI2_DATA_DIR": str(tmp_path / "data"),
            "MYPYPI2_REPOSITORIES__PYPI__UPSTREAM": upstream.url,
            # What Kubernetes injects for a Service named mypypi2: not settings of ours.
            "MYPYPI2_PORT": "tcp://10.0.0.1:8000",
            "MYPYPI2_SERVICE_HOST": "10.0.0.1",
        }
        migrated = await run(str(installed / "mypypi2"), "migrate", cwd=cwd, environ=environ)
        assert migrated.returncode == 0, migrated.stderr
        assert f"applied {len(MIGRATIONS)} migration(s)" in migrated.stdout, migrated.stdout

        server = await _serve(installed, cwd, environ, tmp_path / "logs")
        try:
            await _assert_serves_app(server.url)
        finally:
            assert await server.stop() == 0, server.stderr()
        assert not server.leftovers


async def _serve(installed: Path, cwd: Path, environ: dict[str, str], logs: Path) -> Server:
    port = free_port()
    logs.mkdir()  # noqa: ASYNC240 - one mkdir
    with (
        open(logs / "stdout", "wb") as stdout,  # noqa: ASYNC230 - the child writes to them
        open(logs / "stderr", "wb") as stderr,  # noqa: ASYNC230
    ):
        process = await asyncio.create_subprocess_exec(
            str(installed / "mypypi2"), "serve",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            cwd=cwd, env=environ, stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout, stderr=stderr,
            start_new_session=True,
        )  # fmt: skip
    server = Server(process, port, logs, None)
    try:
        await server.wait_until_healthy()
    except BaseException:
        await server.stop()
        raise
    return server


async def _assert_serves_app(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        page_url = f"{base}/pypi/simple/app/"
        async with http.get(page_url, headers={"Accept": JSON_V1}) as response:
            assert response.status == 200, await response.text()
            page = json.loads(await response.read())
        (file,) = page["files"]
        assert file["filename"] == APP_WHEEL.filename
        assert file["hashes"] == {"sha256": APP_WHEEL.sha256}
        async with http.get(urljoin(page_url, file["url"])) as response:
            assert response.status == 200
            assert hashlib.sha256(await response.read()).hexdigest() == APP_WHEEL.sha256

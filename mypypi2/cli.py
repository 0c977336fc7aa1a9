"""The `mypypi2` command: serve, migrate, purge, gc, config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path

import msgspec
import psycopg

from mypypi2 import config as config_module
from mypypi2 import db, embedded, logs, servers, sweep
from mypypi2 import files as files_module
from mypypi2 import pages as pages_module
from mypypi2.config import (
    HANDOFF_VARIABLE,
    METRICS_DIR_VARIABLE,
    SERVERS,
    Config,
    format_duration,
)
from mypypi2.errors import ConfigError, StartupError
from mypypi2.eviction import Eviction, Policy
from mypypi2.names import normalize
from mypypi2.progress import ProgressBar
from mypypi2.queries.notifications import Purged, notify_purged
from mypypi2.storage.configured import open_storage
from mypypi2.urls import redact_url

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mypypi2",
        description="A pull-through cache for Python package indexes.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="config file (.toml, .json or .yaml); default: config.toml, config.json or "
        "config.yaml in the working directory, else built-in defaults",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the cache",
        description="Run the cache. With no database configured, an embedded PostgreSQL "
        "is started in the data directory; migrations are applied before serving. A worker "
        "that dies is replaced while the others keep serving.",
    )
    serve.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (0: one per CPU core)")
    serve.add_argument("--server", choices=SERVERS, help="ASGI server (default: granian)")
    serve.add_argument(
        "--offline",
        action="store_true",
        help="never contact any upstream: serve what is stored, 404 for the rest",
    )

    commands.add_parser(
        "migrate",
        help="apply database migrations and exit",
        description="Apply pending database migrations (also done by `serve`) and exit.",
    )
    purge = commands.add_parser(
        "purge",
        help="mark pages stale (and drop stored files) in every worker and replica",
        description="Mark the pages of a repository stale, so the next request fetches them "
        "from the upstream again; with --files, also delete their stored files and metadata. "
        "Every running worker and replica drops its copies at once.",
    )
    purge.add_argument("repository", help="the repository name")
    purge.add_argument("projects", nargs="*", help="projects to purge (default: all)")
    purge.add_argument("--files", action="store_true", help="also delete stored files")
    gc = commands.add_parser(
        "gc",
        help="evict stored files by the storage limits (max-bytes, evict-unused-after)",
        description="Remove stored files unused for longer than evict-unused-after, and the "
        "least recently used ones while a store or repository is over its max-bytes (down to "
        "90%% of it). Pages and .metadata stay; a removed file is fetched again when asked "
        "for. Serving workers run the same sweep every few minutes.",
    )
    gc.add_argument("--dry-run", action="store_true", help="print what would go; remove nothing")
    gc.add_argument("--repository", help="remove files of this repository only")
    show = commands.add_parser(
        "config",
        help="print the resolved configuration as TOML",
        description="Print the configuration after defaults, the config file and MYPYPI2_* "
        "environment overrides are applied.",
    )
    show.add_argument("--show", action="store_true", help="print it (the default action)")
    show.add_argument(
        "--show-secrets",
        action="store_true",
        help="print passwords, secret keys and upstream headers instead of <redacted>",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure("text")  # until the configuration says otherwise
    try:
        config = _load_config(args.config)
        logs.configure(config.logging.format)
        if args.command == "config":
            sys.stdout.write(config_module.to_toml(config, redact=not args.show_secrets))
            return 0
        if args.command == "migrate":
            applied = _migrate(_database(config))
            print(f"applied {applied} migration(s)")
            return 0
        if args.command == "purge":
            return _purge(config, args)
        if args.command == "gc":
            return _gc(config, args)
        return _serve(config, args)
    except ConfigError as exc:
        print(f"mypypi2: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"mypypi2: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the server took over
        return 130


def _load_config(path: Path | None) -> Config:
    if path is None:
        path = config_module.find_config_file(Path.cwd())
    return config_module.load(path, os.environ)


def _database(config: Config) -> str:
    if config.database.url:
        return config.database.url
    return embedded.start(config_module.data_dir(config))


def _migrate(dsn: str) -> int:
    try:
        return db.migrate(dsn)
    except psycopg.Error as exc:  # its hint lines ("Is the server running...?") are dropped
        what = f"cannot use the database {redact_url(dsn)}"
        raise StartupError.because(what, exc) from exc


def _check_storage(config: Config) -> None:
    """Open the store as the workers will: a directory that cannot be created fails here,
    once and in one line, instead of in every worker."""

    async def open_and_close() -> None:
        async with AsyncExitStack() as stack:
            await open_storage(config, stack)

    try:
        asyncio.run(open_and_close())
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise StartupError(f"cannot use the file store{where}: {exc.strerror}") from exc


def _serve(config: Config, args: argparse.Namespace) -> int:
    overrides = {
        key: value
        for key, value in (
            ("host", args.host),
            ("port", args.port),
            ("workers", args.workers),
            ("server", args.server),
        )
        if value is not None
    }
    try:
        server = msgspec.convert(
            {**msgspec.to_builtins(config.server), **overrides}, type(config.server)
        )
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid command-line option: {exc}") from exc
    config = msgspec.structs.replace(config, server=server, offline=config.offline or args.offline)
    servers.check_port(server.host, server.port)
    dsn = _database(config)
    _migrate(dsn)
    _check_storage(config)
    workers = server.workers or os.cpu_count() or 1
    # The workers' readiness looks for this file: `serve` creates it when told to stop.
    shutdown_dir = Path(tempfile.mkdtemp(prefix="mypypi2-serve-"))
    shutdown_flag = shutdown_dir / "stopping"
    os.environ[HANDOFF_VARIABLE] = config_module.encode_handoff(config, dsn, str(shutdown_flag))
    for repository in config.repositories:
        caches = f"repository {repository.name!r} caches {repository.upstream}"
        usage = (
            f"pip install --index-url http://{server.host}:{server.port}"
            f"{server.base_url.rstrip('/')}/{repository.name}/simple/ ..."
        )
        if config.logging.format == "json":  # then every line is a JSON object
            log.info("%s: %s", caches, usage)
        else:
            print(f"mypypi2: {caches}\n  {usage}", flush=True)
    try:
        with _metrics_dir() as metrics_dir:
            os.environ[METRICS_DIR_VARIABLE] = metrics_dir
            if server.server == "hypercorn":
                return servers.run_hypercorn(server, workers, shutdown_flag)
            servers.run_granian(server, workers, shutdown_flag, config.logging.format)
            return 0
    finally:
        shutil.rmtree(shutdown_dir, ignore_errors=True)


@contextmanager
def _metrics_dir() -> Iterator[str]:
    """The directory where this start's workers keep their metrics: the one the environment
    names (emptied: values of an earlier start must not add up with these), else a new one
    of our own, removed at exit. Never shared with another replica or start."""
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        yield given
        return
    made = tempfile.mkdtemp(prefix="mypypi2-metrics-")
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _purge(config: Config, args: argparse.Namespace) -> int:
    if config.repository(args.repository) is None:
        raise ConfigError(f"no repository named {args.repository!r} in the configuration")
    dsn = _database(config)
    _migrate(dsn)
    names = sorted({normalize(name) for name in args.projects}) or None
    pages, files = asyncio.run(_purge_async(config, dsn, args.repository, names, args.files))
    print(f"purged {pages} page(s)" + (f" and {files} stored file(s)" if args.files else ""))
    return 0


async def _purge_async(
    config: Config, dsn: str, repository: str, names: list[str] | None, with_files: bool
) -> tuple[int, int]:
    async with AsyncExitStack() as stack:
        pool = await db.create_pool(dsn, 1, 2)
        stack.push_async_callback(pool.close)
        async with pool.acquire() as connection:
            pages = await pages_module.purge(connection, repository, names)
            files = 0
            if with_files:
                storage = await open_storage(config, stack)
                files = await files_module.purge_stored(connection, storage, repository, names)
            await notify_purged(connection, Purged(repository, names, with_files))
        return pages, files


def _gc(config: Config, args: argparse.Namespace) -> int:
    if args.repository is not None and config.repository(args.repository) is None:
        raise ConfigError(f"no repository named {args.repository!r} in the configuration")
    policy = sweep.policy(config)
    if not policy.bounded:
        print("no max-bytes or evict-unused-after is configured: nothing to evict")
        return 0
    dsn = _database(config)
    _migrate(dsn)
    report = asyncio.run(_gc_async(config, policy, dsn, args.dry_run, args.repository))
    if report is None:
        print(
            "mypypi2: another process is sweeping the store now; try again later", file=sys.stderr
        )
        return 1
    if args.dry_run:
        for eviction in report.evicted:
            print(_evicted_line("would remove", eviction))
    done = "would free" if args.dry_run else "freed"
    usage = report.usage_bytes - report.bytes_freed
    cap = "" if report.max_bytes is None else f" of max-bytes {_size(report.max_bytes)}"
    print(
        f"{len(report.evicted)} file(s), {done} {_size(report.bytes_freed)}; "
        f"store usage {_size(usage)}{cap}"
    )
    if report.protected:
        # Else a store over its cap that gc leaves alone looks like a bug.
        grace = format_duration(sweep.grace_seconds(config.storage))
        print(
            f"kept whatever the limits say: {len(report.protected)} file(s) "
            f"({_size(sum(o.size for o in report.protected))}) used in the last {grace} "
            "or being downloaded"
        )
    return 0


async def _gc_async(
    config: Config, policy: Policy, dsn: str, dry_run: bool, repository: str | None
) -> sweep.Report | None:
    bar: ProgressBar | None = None

    def removed(batch: list[Eviction], planned: int) -> None:
        # Plain lines as files go; at a terminal, a bar under them too.
        nonlocal bar
        if bar is None and sys.stderr.isatty():
            bar = ProgressBar(sys.stderr, planned, "files")
        if bar is not None:
            bar.clear()
        for eviction in batch:
            print(_evicted_line("removed", eviction), flush=True)
        if bar is not None:
            bar.advance(len(batch), _size(sum(e.object.size for e in batch)))

    async with AsyncExitStack() as stack:
        storage = await open_storage(config, stack)
        sweeper = sweep.Sweeper(
            dsn, storage, policy, grace_seconds=sweep.grace_seconds(config.storage)
        )
        report = await sweeper.sweep(dry_run=dry_run, only=repository, progress=removed)
    if bar is not None:
        bar.end()
    return report


def _evicted_line(verb: str, eviction: Eviction) -> str:
    stored = eviction.object
    return f"{verb} {stored.key} ({_size(stored.size)}, {eviction.reason})"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"

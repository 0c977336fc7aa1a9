"""Soak: mixed warm/cold load over two replicas for minutes, watching errors and memory.

    .venv/bin/python -m bench.soak                  # 10 minutes, about one core
    .venv/bin/python -m bench.soak --minutes 1 --rate 50

Two `mypypi2 serve` processes (the replicas, `--workers` each) share one PostgreSQL (a fresh
database on MYPYPI2_BENCH_DATABASE_URL's server, else an embedded one) and one disk store,
and pull from a loopback upstream that makes up any project asked for, so cold requests
never run out. Clients alternate between the replicas at a fixed total rate: most requests
are warm (the page and file of a project every replica has served), the rest cold (the page,
then the file, of a project never asked for: two upstream fetches and a stored download).
Pages live 60 s, so warm pages are revalidated now and then too.

Every non-200 answer or failed request is an error (none is expected). Every worker's RSS
is sampled every `--sample-every` seconds; the report (stdout, and
bench/work/results/soak-<time>.md) has the curve as a table, then the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psutil  # type: ignore[import-untyped, unused-ignore]
import tomli_w
from aiohttp import web

from bench.proc import Service, Services, clean_env, free_port, wait_http

RESULTS = Path(__file__).resolve().parent / "work" / "results"
JSON_V1 = "application/vnd.pypi.simple.v1+json"
FILE_BYTES = 20_000
WARM_PROJECTS = 200
WARM_SHARE = 0.8
MIB = 1024 * 1024


# --- the upstream: any project exists, with one file ----------------------------------------


def _content(name: str) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (FILE_BYTES // len(seed) + 1))[:FILE_BYTES]


async def _page(request: web.Request) -> web.Response:
    name = request.match_info["project"]
    content = _content(name)
    filename = f"{name}-1.0.tar.gz"
    page = {
        "meta": {"api-version": "1.1"},
        "name": name,
        "files": [
            {
                "filename": filename,
                "url": f"../../files/{name}/{filename}",
                "hashes": {"sha256": hashlib.sha256(content).hexdigest()},
                "size": len(content),
            }
        ],
        "versions": ["1.0"],
    }
    return web.Response(body=json.dumps(page).encode(), content_type=JSON_V1)


async def _file(request: web.Request) -> web.Response:
    name = request.match_info["project"]
    return web.Response(body=_content(name), content_type="application/octet-stream")


async def start_upstream(port: int) -> web.AppRunner:
    app = web.Application()
    app.router.add_get("/simple/{project}/", _page)
    app.router.add_get("/files/{project}/{filename}", _file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


# --- the replicas ---------------------------------------------------------------------------


def start_replica(
    services: Services, work: Path, index: int, dsn: str, upstream: str, workers: int
) -> tuple[Service, str]:
    home = work / f"replica-{index}"
    home.mkdir()
    settings = {
        "data-dir": str(home / "data"),
        "database": {"url": dsn},
        "storage": {"path": str(work / "store")},  # shared by both replicas
        "server": {"drain-time": 0},
        "repositories": [{"name": "pypi", "upstream": upstream, "ttl": 60}],
    }
    (home / "config.toml").write_text(tomli_w.dumps(settings))
    port = free_port()
    argv = [sys.executable, "-m", "mypypi2", "serve", "--port", str(port)]
    service = services.start(
        f"replica-{index}",
        [*argv, "--workers", str(workers)],
        log=home / "serve.log",
        env=clean_env(),
        cwd=home,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/-/ready", service, timeout=180)
    return service, url


def workers_rss(replicas: list[Service]) -> dict[str, float]:
    """RSS in MiB of each worker: the children of each `serve` (multiprocessing's resource
    tracker aside)."""
    sizes = {}
    for number, replica in enumerate(replicas, 1):
        try:
            children = psutil.Process(replica.pid).children()
        except psutil.Error:
            continue
        workers = [c for c in children if "resource_tracker" not in " ".join(_cmdline(c))]
        for worker_number, worker in enumerate(sorted(workers, key=lambda p: p.pid), 1):
            with contextlib.suppress(psutil.Error):
                sizes[f"r{number}w{worker_number}"] = worker.memory_info().rss / MIB
    return sizes


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return list(process.cmdline())
    except psutil.Error:
        return []


# --- the load -------------------------------------------------------------------------------


class Load:
    def __init__(self, replicas: list[str], rate: float) -> None:
        self._replicas = itertools.cycle(replicas)
        self._interval = 1 / rate
        self._cold = (f"cold-{number}" for number in itertools.count())
        self._turn = itertools.count()
        self.latencies: dict[str, list[float]] = {"warm": [], "cold": []}
        self.errors: Counter[str] = Counter()

    async def get(self, http: aiohttp.ClientSession, kind: str, url: str) -> None:
        started = time.monotonic()
        try:
            async with http.get(url, headers={"Accept": JSON_V1}) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors[f"{kind} {type(exc).__name__}"] += 1
            return
        if status != 200:
            self.errors[f"{kind} {status}"] += 1
            return
        self.latencies[kind].append(time.monotonic() - started)

    async def project(self, http: aiohttp.ClientSession, kind: str, base: str, name: str) -> None:
        await self.get(http, kind, f"{base}/pypi/simple/{name}/")
        await self.get(http, kind, f"{base}/pypi/files/{name}/{name}-1.0.tar.gz")

    async def warm_up(self, http: aiohttp.ClientSession, replicas: list[str]) -> None:
        for base in replicas:
            for start in range(0, WARM_PROJECTS, 20):
                names = [f"warm-{n}" for n in range(start, start + 20)]
                await asyncio.gather(*(self.project(http, "warm", base, n) for n in names))
        self.latencies = {"warm": [], "cold": []}

    async def run(self, http: aiohttp.ClientSession, until: float) -> None:
        """Start a project's requests every `interval` seconds, whoever is still busy."""
        running: set[asyncio.Task[None]] = set()
        next_start = time.monotonic()
        while next_start < until:
            turn = next(self._turn)
            base = next(self._replicas)
            if (turn % 100) < WARM_SHARE * 100:
                job = self.project(http, "warm", base, f"warm-{turn * 7919 % WARM_PROJECTS}")
            else:
                job = self.project(http, "cold", base, next(self._cold))
            task = asyncio.create_task(job)
            running.add(task)
            task.add_done_callback(running.discard)
            next_start += self._interval * 2  # two requests per project
            await asyncio.sleep(max(0.0, next_start - time.monotonic()))
        await asyncio.gather(*running)


def _row(replicas: list[Service], load: Load, elapsed: float) -> str:
    sizes = workers_rss(replicas)
    done = sum(len(values) for values in load.latencies.values())
    cells = " | ".join(f"{sizes[name]:.1f}" for name in sorted(sizes))
    return f"| {elapsed:.0f} | {cells} | {done} | {sum(load.errors.values())} |"


async def sample(replicas: list[Service], load: Load, every: float, rows: list[str]) -> None:
    started = time.monotonic()
    while True:
        rows.append(_row(replicas, load, time.monotonic() - started))
        print(rows[-1], flush=True)
        await asyncio.sleep(every)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000 if ordered else 0.0


async def soak(args: argparse.Namespace, services: Services, work: Path) -> str:
    upstream_port = free_port()
    runner = await start_upstream(upstream_port)
    try:
        dsn = await asyncio.to_thread(_database, services, work)
        upstream = f"http://127.0.0.1:{upstream_port}/simple/"
        started = [
            await asyncio.to_thread(start_replica, services, work, i, dsn, upstream, args.workers)
            for i in (1, 2)
        ]
        replicas = [service for service, _ in started]
        urls = [url for _, url in started]
        load = Load(urls, args.rate)
        connector = aiohttp.TCPConnector(limit=200)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            await load.warm_up(http, urls)
            names = sorted(workers_rss(replicas))
            rows = [
                "| seconds | " + " | ".join(f"{n} MiB" for n in names) + " | requests | errors |",
                "|" + " ---: |" * (len(names) + 3),
            ]
            print("\n".join(rows), flush=True)
            sampler = asyncio.create_task(sample(replicas, load, args.sample_every, rows))
            await load.run(http, time.monotonic() + args.minutes * 60)
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            rows.append(_row(replicas, load, args.minutes * 60))
    finally:
        await runner.cleanup()
    return _report(args, rows, load)


def _report(args: argparse.Namespace, rows: list[str], load: Load) -> str:
    lines = [
        f"# soak {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.minutes:g} min, 2 replicas x {args.workers} workers, {args.rate:g} req/s "
        f"target, {WARM_SHARE:.0%} warm ({WARM_PROJECTS} projects), the rest cold "
        f"(page + {FILE_BYTES // 1000} kB file each); {os.cpu_count()} CPUs",
        "",
        "Worker RSS (MiB) over time:",
        "",
        *rows,
        "",
        "| kind | requests | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, values in load.latencies.items():
        top = max(values, default=0.0) * 1000
        lines.append(
            f"| {kind} | {len(values)} | {_percentile(values, 0.5):.1f} | "
            f"{_percentile(values, 0.99):.1f} | {top:.1f} |"
        )
    errors = ", ".join(f"{k}: {v}" for k, v in load.errors.most_common()) or "none"
    lines += ["", f"Errors: {errors}"]
    return "\n".join(lines) + "\n"


def _database(services: Services, work: Path) -> str:
    """A fresh database on MYPYPI2_BENCH_DATABASE_URL's server, else an embedded one."""
    import psycopg

    from mypypi2 import embedded

    base = os.environ.get("MYPYPI2_BENCH_DATABASE_URL")
    if not base:
        return embedded.start(work / "postgres")
    name = f"mypypi2_soak_{os.getpid()}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    services.on_close("soak database", drop)
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--workers", type=int, default=2, help="workers per replica")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    args = parser.parse_args()
    services = Services()
    with tempfile.TemporaryDirectory(prefix="mypypi2-soak-") as work:
        try:
            report = asyncio.run(soak(args, services, Path(work)))
        finally:
            services.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"soak-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.md"
    path.write_text(report)
    print(f"\n{report}\nwritten to {path}")
    return 0 if "Errors: none" in report else 1


if __name__ == "__main__":
    sys.exit(main())

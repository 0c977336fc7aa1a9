"""The project list at the scale of the public index: a synthetic list of 700,000 names.

    .venv/bin/python -m bench.big_list                       # mypypi2 and the upstream, ~2 min
    .venv/bin/python -m bench.big_list --baseline /tmp/before   # + another checkout, same run

nginx serves the list (PEP 691 JSON, PEP 503 HTML, negotiated on Accept) and a 2,000-file
project page; each mypypi2 (`serve`, `--workers` processes, disk storage) starts with an
empty database and is measured in turn:

- *cold*: the first GET of the list in each format, timed at the client, beside the same
  GET straight from nginx (the upstream, what the cache has to beat on its own machine);
  every answer is checked (status, name count, first and last name);
- *warm*: `wrk` on the list with `Accept-Encoding: gzip` (what pip sends) and with none,
  requests/s, beside nginx serving the uncompressed list;
- *memory*: RSS of each worker after every worker has served the list in both formats and
  all codings and the 2,000-file page (the issue's bound: under 150 MB each).

Writes `bench/work/results/big-list-<timestamp>.json` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]

from bench import wrk
from bench.client import HTML, JSON_V1
from bench.proc import Services
from bench.targets import BASELINE, VENV_BIN, Env, Mypypi2
from bench.upstream import Upstream, _list_html, _list_json

WORK = Path(__file__).resolve().parent / "work"
HUGE = "huge-project"
MIB = 1024 * 1024
WRK = shutil.which("wrk") or "/usr/bin/wrk"
CODINGS = (None, "gzip", "zstd")


def names(count: int) -> list[str]:
    """Display names as an index has them: mixed case and separators, a few long ones."""
    shapes = ("proj-{:07d}", "Proj_{:07d}.Tools", "py{:07d}-client", "{:07d}.zope.AddOn-x")
    return [shapes[i % len(shapes)].format(i) for i in range(count)]


def write_tree(root: Path, count: int) -> list[str]:
    if root.exists():
        shutil.rmtree(root)
    page = root / "simple" / HUGE
    page.mkdir(parents=True)
    listed = names(count)
    (root / "simple" / "index.html").write_text(_list_html(listed))
    (root / "simple" / "index.json").write_text(_list_json(listed))
    files = [
        {
            "filename": f"huge_project-{n // 8}.{n % 8}.0-py3-none-any.whl",
            "url": f"/files/{HUGE}/huge_project-{n // 8}.{n % 8}.0-py3-none-any.whl",
            "hashes": {"sha256": f"{n:064x}"},
            "requires-python": ">=3.8",
            "size": 10_000 + n,
            "upload-time": "2024-01-01T00:00:00.000000Z",
            "core-metadata": {"sha256": f"{n + 1:064x}"},
        }
        for n in range(2000)
    ]
    document = {"meta": {"api-version": "1.1"}, "name": HUGE, "files": files, "versions": []}
    (page / "index.json").write_text(json.dumps(document))
    (page / "index.html").write_text("<!DOCTYPE html><html><body></body></html>\n")
    return listed


def _get(url: str, accept: str, coding: str | None = None) -> tuple[float, int, bytes]:
    headers = {"Accept": accept, "Accept-Encoding": coding or "identity"}
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=300) as r:
        body = r.read()
        return time.perf_counter() - started, r.status, body


def _check(body: bytes, accept: str, listed: list[str]) -> str | None:
    text = body.decode()
    if accept == JSON_V1:
        got = [p["name"] for p in json.loads(text)["projects"]]
    else:
        got = [line.rpartition('">')[2].removesuffix("</a><br />") for line in text.splitlines()]
        got = [name for name in got if name and "<" not in name]
    if len(got) != len(listed) or got[0] != listed[0] or got[-1] != listed[-1]:
        return f"{len(got)} names, first {got[:1]}, last {got[-1:]}"
    return None


def _rss_mib(target: Mypypi2) -> list[float]:
    assert target.service is not None
    workers = psutil.Process(target.service.pid).children(recursive=True)
    rss = [p.memory_info().rss for p in workers if "postgres" not in p.name()]
    return sorted(round(size / MIB, 1) for size in rss)


def measure(target: Mypypi2, upstream: Upstream, listed: list[str], seconds: float) -> dict:
    base = target.index_url
    direct = upstream.direct_url
    result: dict[str, object] = {}
    for accept, label in ((JSON_V1, "json"), (HTML, "html")):
        direct_seconds, _, body = _get(direct, accept)
        seconds_cold, status, body = _get(base, accept)
        problem = _check(body, accept, listed) if status == 200 else f"HTTP {status}"
        if problem:
            raise RuntimeError(f"{target.name} {label}: {problem}")
        result[f"cold_{label}_s"] = round(seconds_cold, 2)
        result[f"direct_{label}_s"] = round(direct_seconds, 2)
    # Every worker serves every form once (parallel requests reach both), then the page.
    with ThreadPoolExecutor(8) as pool:
        jobs = [(a, c) for a in (JSON_V1, HTML) for c in CODINGS for _ in range(6)]
        list(pool.map(lambda job: _get(base, *job), jobs))
        list(pool.map(lambda _: _get(f"{base}{HUGE}/", JSON_V1), range(12)))
    result["rss_per_worker_mib"] = _rss_mib(target)
    for label, url, coding in (
        ("warm_html_gzip_rps", base, "gzip"),
        ("warm_html_identity_rps", base, "identity"),
        ("direct_html_identity_rps", direct, "identity"),
    ):
        figures = wrk.load(
            WRK,
            url,
            seconds=seconds,
            connections=8,
            threads=2,
            headers={"Accept": HTML, "Accept-Encoding": coding},
            work=target.dir,
        )
        if figures.errors:
            raise RuntimeError(f"{target.name} {label}: {figures.errors} errors")
        result[label] = figures.rps
    result["rss_per_worker_after_wrk_mib"] = _rss_mib(target)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.big_list")
    parser.add_argument("--names", type=int, default=700_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="each wrk run")
    parser.add_argument("--baseline", type=Path, help="another checkout with its own .venv")
    args = parser.parse_args(argv)
    work = WORK / "big-list"
    shutil.rmtree(work, ignore_errors=True)
    listed = write_tree(work / "tree", args.names)
    services = Services()
    results: dict[str, dict] = {}
    try:
        upstream = Upstream(shutil.which("nginx") or "/usr/sbin/nginx", work, work / "tree", 2)
        upstream.start(services)
        env = Env(
            work=work,
            venvs=WORK / "venvs",
            services=services,
            upstream=upstream,
            workers=args.workers,
            database_url=os.environ.get("MYPYPI2_BENCH_DATABASE_URL"),
        )
        targets = [("mypypi2", VENV_BIN)]
        if args.baseline is not None:
            targets.append((BASELINE, args.baseline.resolve() / ".venv" / "bin"))
        for name, bin_dir in targets:
            target = Mypypi2(env, "granian", name=name, bin_dir=bin_dir)
            target.start()
            try:
                results[name] = measure(target, upstream, listed, args.seconds)
            finally:
                assert target.service is not None
                target.service.stop()
            print(name, json.dumps(results[name]), flush=True)
    finally:
        services.close()
    out = WORK / "results" / f"big-list-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"names": args.names, "workers": args.workers, **results}, indent=2))
    print(_table(results))
    return 0


def _table(results: dict[str, dict]) -> str:
    keys = sorted({key for figures in results.values() for key in figures})
    lines = ["| figure | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(str(r.get(key)) for r in results.values()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""The workloads. Each takes one target and returns plain figures (a dict) or raises.

Warm pages and files are loaded with wrk after a warm-up whose answers are checked; installs
time real pip and uv runs into fresh venvs with fresh client caches; the cold workload sends
32 concurrent requests for a 20 MB file a target has never seen and counts what reached the
upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench import client, wrk
from bench.corpus import HUGE, LARGE, LARGE_COLD, MEDIUM, SMALL, Corpus
from bench.proc import clean_env, run
from bench.targets import VENV_BIN, Target
from bench.upstream import Upstream

# name -> (project, Accept)
PAGES = {
    "page-json-50": (MEDIUM, client.JSON_V1),
    "page-html-50": (MEDIUM, client.HTML),
    "page-json-2000": (HUGE, client.JSON_V1),
    "page-html-2000": (HUGE, client.HTML),
}
# name -> (project, connections)
FILES = {"file-small": (SMALL, 64), "file-large": (LARGE, 8)}
INSTALL_TOOLS = ("pip", "uv")
CONCURRENT_COLD = 32


@dataclass
class Bench:
    wrk: str
    corpus: Corpus
    upstream: Upstream
    work: Path  # scratch space for clients (venvs, caches)
    workers: int
    seconds: float  # wrk duration per target and workload
    threads: int = 2  # wrk threads


# -- warm pages and files --------------------------------------------------------------


def _warm(urls: list[str], accept: str | None, check: object, rounds: int = 5) -> client.Answer:
    """Ask in parallel until every answer in a round is correct and came from the target.

    Parallel, so every worker process of the target sees the request (proxpi's caches
    are per process); the round must be all-good, so no worker is still filling."""
    problem = "no answer"
    for _ in range(rounds):
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda url: client.get(url, accept), urls))
        problems = [check(a) for a in answers]  # type: ignore[operator]
        redirected = [a.url for a in answers if a.url != urls[0]]
        if not any(problems) and not redirected:
            return answers[0]
        problem = next((p for p in problems if p), f"redirected to {redirected[:1]}")
        time.sleep(1)
    raise RuntimeError(f"{urls[0]}: {problem}")


def page(bench: Bench, target: Target, name: str) -> dict[str, object]:
    project, accept = PAGES[name]
    url = target.page_url(project)
    expected = bench.corpus.file_count(project)
    sample = _warm(
        [url] * (8 * bench.workers),
        accept,
        lambda answer: client.check_page(answer, accept, expected),
    )
    result = wrk.load(
        bench.wrk,
        url,
        seconds=bench.seconds,
        connections=64,
        threads=bench.threads,
        headers={"Accept": accept},
        work=bench.work,
    )
    return {
        **result.as_dict(),
        "body_bytes": len(sample.body),
        "content_type": sample.content_type,
    }


def file_url(target: Target, project: str, filename: str) -> str:
    links = client.page_links(client.get(target.page_url(project), client.JSON_V1))
    return links[filename]


def file(bench: Bench, target: Target, name: str) -> dict[str, object]:
    project, connections = FILES[name]
    dist = bench.corpus.file(project)
    url = file_url(target, project, dist.filename)
    _warm(
        [url] * (4 * bench.workers),
        None,
        lambda answer: client.check_file(answer, dist.sha256),
    )
    result = wrk.load(
        bench.wrk,
        url,
        seconds=bench.seconds,
        connections=connections,
        threads=bench.threads,
        work=bench.work,
    )
    return {**result.as_dict(), "file_bytes": len(dist.content)}


# -- installs --------------------------------------------------------------------------


def _client_env() -> dict[str, str]:
    # No PIP_*/UV_* from this machine, and no pip configuration file at all.
    return clean_env({"PIP_CONFIG_FILE": os.devnull, "PYTHONDONTWRITEBYTECODE": "1"})


def install(
    bench: Bench, target: Target, tool: str, dep_set: str, run_id: str
) -> dict[str, object]:
    """One timed install of `dep_set`'s root into a fresh venv with a fresh client cache."""
    scratch = bench.work / "clients" / run_id
    if scratch.exists():
        shutil.rmtree(scratch)
    venv, cache = scratch / "venv", scratch / "cache"
    # The venv is made before the clock starts (no pip in it: pip runs from outside).
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = str(venv / "bin" / "python")
    root = bench.corpus.dep_roots[dep_set]
    if tool == "pip":
        argv = [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--index-url",
            target.index_url,
            root,
        ]
    else:
        argv = [
            str(VENV_BIN / "uv"),
            "pip",
            "install",
            "--no-config",
            "--python",
            python,
            "--cache-dir",
            str(cache),
            "--index-url",
            target.index_url,
            "--quiet",
            root,
        ]
    mark = bench.upstream.log.mark()
    started = time.perf_counter()
    run(argv, env=_client_env(), cwd=scratch, timeout=600)
    seconds = time.perf_counter() - started
    upstream_requests = len(bench.upstream.log.since(mark))
    installed = sum(1 for _ in venv.glob("lib/python*/site-packages/*.dist-info"))
    shutil.rmtree(scratch)
    if installed != bench.corpus.dep_set_size:
        raise RuntimeError(
            f"{tool} installed {installed} distributions, expected {bench.corpus.dep_set_size}"
        )
    return {"seconds": round(seconds, 3), "upstream_requests": upstream_requests}


# -- concurrent cold requests ----------------------------------------------------------


async def _fetch_many(url: str, count: int) -> list[dict[str, object]]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = asyncio.Event()

        async def one() -> dict[str, object]:
            await start.wait()
            began = time.perf_counter()
            digest = hashlib.sha256()
            try:
                async with session.get(url) as response:
                    async for chunk in response.content.iter_chunked(1 << 16):
                        digest.update(chunk)
                    return {
                        "status": response.status,
                        "sha256": digest.hexdigest(),
                        "redirected": bool(response.history),
                        "seconds": time.perf_counter() - began,
                    }
            except (aiohttp.ClientError, TimeoutError) as exc:
                return {"status": 0, "error": repr(exc), "seconds": time.perf_counter() - began}

        tasks = [asyncio.ensure_future(one()) for _ in range(count)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*tasks)


def cold_concurrent(bench: Bench, target: Target) -> dict[str, object]:
    """32 clients at once ask for a 20 MB file the target has never served."""
    dist = bench.corpus.file(LARGE_COLD)
    url = file_url(target, LARGE_COLD, dist.filename)  # the page only, as a client would
    upstream_path = f"/files/{LARGE_COLD}/{dist.filename}"
    mark = bench.upstream.log.mark()
    began = time.perf_counter()
    answers = asyncio.run(_fetch_many(url, CONCURRENT_COLD))
    wall = time.perf_counter() - began
    requests = bench.upstream.log.since(mark, settle=1.0)
    good = sum(1 for a in answers if a["status"] == 200 and a.get("sha256") == dist.sha256)
    direct = urlsplit(url).port == bench.upstream.direct_port
    return {
        "clients": CONCURRENT_COLD,
        "upstream_gets": None
        if direct
        else sum(1 for r in requests if r.method == "GET" and r.path == upstream_path),
        "good_bodies": good,
        "redirected": sum(1 for a in answers if a.get("redirected")),
        "statuses": dict(Counter(str(a["status"]) for a in answers)),
        "errors": [a["error"] for a in answers if "error" in a][:3],
        "wall_s": round(wall, 3),
        "slowest_s": round(max(float(a["seconds"]) for a in answers), 3),  # type: ignore[arg-type]
    }

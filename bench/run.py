"""`python -m bench.run` (`just bench`): build the upstream, start every target, run the
workloads against each in turn, stop everything, write bench/results/ and print the table.

    python -m bench.run                  the full run (about 7 minutes on 2 cores)
    python -m bench.run --quick          short durations, one install of each kind
    python -m bench.run --only pages --only install --targets mypypi2,nginx
    python -m bench.run --only pages --targets mypypi2,nginx --profile page-json-50
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import corpus as corpus_module
from bench import memory, prereq, report, workloads
from bench.proc import Services
from bench.targets import BASELINE, VENV_BIN, Env, Mypypi2, Target, start_all
from bench.upstream import Upstream, write_tree

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / "work"
ALL_TARGETS = ("mypypi2", "proxpi", "devpi", "nginx", "mypypi2-hypercorn", "mypypi2-uvicorn")
# Installs and the cold file go through the main targets; the ASGI-server variants of
# mypypi2 only take the warm page and file loads.
MAIN_TARGETS = ("mypypi2", "proxpi", "devpi", "nginx")
WORKLOADS = (*workloads.PAGES, *workloads.FILES, "cold-large", "install")
# Warm workloads where mypypi2 reaches less than this fraction of nginx get profiled.
PROFILE_BELOW = 0.4
AUTO_PROFILES = 2
GROUPS = {
    "pages": list(workloads.PAGES),
    "files": list(workloads.FILES),
    "cold-large": ["cold-large"],
    "install": ["install"],
}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark mypypi2 against proxpi, devpi-server and nginx on loopback.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke check)")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted({*GROUPS, *WORKLOADS}),
        help="run only this workload or group (repeatable)",
    )
    parser.add_argument(
        "--targets", help=f"comma-separated subset of {','.join(ALL_TARGETS)} (default: all)"
    )
    parser.add_argument("--seconds", type=float, help="wrk duration (default 8, quick 2)")
    parser.add_argument("--cold-runs", type=int, help="cold installs per tool (default 3)")
    parser.add_argument("--warm-runs", type=int, help="warm installs per tool (default 3)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes per service"
    )
    parser.add_argument(
        "--profile",
        action="append",
        choices=sorted({*workloads.PAGES, *workloads.FILES}),
        help="py-spy mypypi2's workers during one extra run of this workload (repeatable);"
        f" by default the {AUTO_PROFILES} warm workloads where mypypi2 is below"
        f" {PROFILE_BELOW}x nginx are profiled",
    )
    parser.add_argument("--no-profile", action="store_true", help="never run py-spy")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run the mypypi2 of this checkout (its own .venv, e.g. a git worktree of an"
        f" older commit) as target {BASELINE}: before/after ratios from one run",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="default: bench/results for a full run, bench/work/results otherwise",
    )
    return parser.parse_args(argv)


def _selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(WORKLOADS)
    chosen = {w for name in only for w in GROUPS.get(name, [name])}
    return [w for w in WORKLOADS if w in chosen]


def _say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def _summary(result: dict[str, Any]) -> str:
    if "rps" in result:
        return (
            f"{result['rps']:,.0f} req/s, {result['mb_per_s']:,.0f} MB/s, "
            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
            + (f", {result['errors']} errors" if result["errors"] else "")
        )
    if "seconds" in result:
        return f"{result['seconds']:.2f} s, {result['upstream_requests']} upstream requests"
    if "good_bodies" in result:
        return (
            f"{result['upstream_gets'] if result['upstream_gets'] is not None else 'no'}"
            f" upstream GETs, {result['good_bodies']}/"
            f"{result['clients']} good, {result['redirected']} redirected, {result['wall_s']} s"
        )
    return str(result)


class Runner:
    def __init__(self, bench: workloads.Bench, targets: list[Target], data: dict[str, Any]):
        self.bench = bench
        self.targets = targets
        self.data = data

    def attempt(self, label: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            result = call()
        except Exception as exc:
            traceback.print_exc()
            self.data["failures"].append(f"{label}: {exc}".splitlines()[0][:300])
            return {"error": str(exc)[:2000]}
        _say(f"{label}: {_summary(result)}")
        return result

    def after(self, workload: str) -> None:
        self.data["rss"][workload] = {t.name: memory.measure(t) for t in self.targets}
        self.data["loadavg"][workload] = [round(x, 2) for x in os.getloadavg()]

    def warm(self, workload: str) -> None:
        run = workloads.page if workload in workloads.PAGES else workloads.file
        results = self.data["workloads"].setdefault(workload, {})
        for target in self.targets:
            results[target.name] = self.attempt(
                f"{workload} {target.name}", partial(run, self.bench, target, workload)
            )
        self.after(workload)

    def cold_large(self) -> None:
        results = self.data["workloads"].setdefault("cold-large", {})
        for target in self._main():
            results[target.name] = self.attempt(
                f"cold-large {target.name}",
                partial(workloads.cold_concurrent, self.bench, target),
            )
        self.after("cold-large")

    def install(self, cold_runs: int, warm_runs: int) -> None:
        results: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.data["workloads"]["install"] = results
        plan = [
            ("cold", run, f"{tool}c{run + 1}", tool)
            for run in range(cold_runs)
            for tool in workloads.INSTALL_TOOLS
        ]
        plan += [
            ("warm", run, f"{tool}c1", tool)
            for run in range(warm_runs)
            for tool in workloads.INSTALL_TOOLS
        ]
        for phase, run, dep_set, tool in plan:
            for target in self._main():
                label = f"{tool}-{phase} #{run + 1} {target.name}"
                run_id = f"{target.name}-{tool}-{phase}{run}"
                result = self.attempt(
                    label, partial(workloads.install, self.bench, target, tool, dep_set, run_id)
                )
                results.setdefault(f"{tool}-{phase}", {}).setdefault(target.name, []).append(result)
        self.after("install")

    def profile(self, target: Target, workload: str, stamp: str) -> None:
        from bench import profile

        _say(f"--- profiling {target.name} on {workload} ---")
        run = workloads.page if workload in workloads.PAGES else workloads.file
        output = WORK / "profiles" / f"{stamp.replace(':', '')}-{workload}.txt"
        try:
            summary = profile.record(
                target,
                self.bench.seconds,
                self.bench.workers,
                output,
                lambda: run(self.bench, target, workload),
            )
        except Exception as exc:
            self.data["failures"].append(f"profile {workload}: {exc}")
            return
        self.data.setdefault("profiles", {})[workload] = summary

    def _main(self) -> list[Target]:
        return [t for t in self.targets if t.name in MAIN_TARGETS]


def _worst(data: dict[str, Any]) -> list[str]:
    """The warm workloads where mypypi2 is furthest below PROFILE_BELOW x nginx."""
    ratios = []
    for workload in (*workloads.PAGES, *workloads.FILES):
        results = data["workloads"].get(workload, {})
        key = "mb_per_s" if workload == "file-large" else "rps"
        ours, reference = results.get("mypypi2", {}).get(key), results.get("nginx", {}).get(key)
        if ours and reference and ours / reference < PROFILE_BELOW:
            ratios.append((ours / reference, workload))
    return [workload for _, workload in sorted(ratios)[:AUTO_PROFILES]]


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    # A plain `kill` of the harness still stops everything it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    selected = _selected(args.only)
    names = args.targets.split(",") if args.targets else list(ALL_TARGETS)
    unknown = set(names) - set(ALL_TARGETS)
    if unknown:
        raise SystemExit(f"bench: unknown targets {sorted(unknown)}; pick from {ALL_TARGETS}")
    names = [n for n in ALL_TARGETS if n in names]
    baseline_bin = None
    if args.baseline is not None:
        baseline_bin = args.baseline.resolve() / ".venv" / "bin"
        if not (baseline_bin / "mypypi2").exists():
            raise SystemExit(f"bench: no {baseline_bin / 'mypypi2'}: install that checkout first")
        names.insert(names.index("mypypi2") + 1 if "mypypi2" in names else 0, BASELINE)
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    cold_runs = args.cold_runs or (1 if args.quick else 3)
    warm_runs = args.warm_runs or (1 if args.quick else 3)
    full = not args.quick and not args.only and not args.targets and not args.baseline
    results_dir = args.results_dir or (BENCH_DIR / "results" if full else WORK / "results")
    timestamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")

    nginx, wrk_path = prereq.ensure_tools()
    for peer in ("proxpi", "devpi"):
        if peer in names:
            prereq.ensure_peer(WORK / "venvs", peer)
    dep_sets = [f"{tool}c{n + 1}" for n in range(cold_runs) for tool in workloads.INSTALL_TOOLS]
    _say("building the upstream index")
    corpus = corpus_module.build(dep_sets if "install" in selected else [])
    tree = WORK / "upstream" / "tree"
    write_tree(corpus, tree)
    data: dict[str, Any] = {
        "timestamp": timestamp,
        "machine": report.machine(),
        "tools": report.tool_versions(wrk_path, str(VENV_BIN / "uv"), sys.executable),
        "settings": {
            "quick": args.quick,
            "workloads": selected,
            "seconds": seconds,
            "wrk_threads": 2,
            "workers": args.workers,
            "cold_runs": cold_runs,
            "warm_runs": warm_runs,
        },
        "targets": {},
        "workloads": {},
        "rss": {},
        "loadavg": {},
        "failures": [],
    }
    services = Services()
    try:
        nginx_work = WORK / "upstream" / "nginx"
        nginx_work.mkdir(parents=True, exist_ok=True)
        (nginx_work / "upstream.log").unlink(missing_ok=True)
        upstream = Upstream(nginx, nginx_work, tree, args.workers)
        upstream.start(services)
        env = Env(
            WORK / "targets",
            WORK / "venvs",
            services,
            upstream,
            args.workers,
            os.environ.get("MYPYPI2_BENCH_DATABASE_URL") or None,
            baseline_bin,
        )
        targets = start_all(env, names, nginx)
        for target in targets:
            info: dict[str, Any] = {
                "versions": target.versions,
                "notes": target.notes,
                "index_url_path": target.index_url.split(":", 2)[-1].split("/", 1)[-1],
            }
            if isinstance(target, Mypypi2):
                info["server"] = target.server
            data["targets"][target.name] = info
        bench = workloads.Bench(wrk_path, corpus, upstream, WORK / "clients", args.workers, seconds)
        runner = Runner(bench, targets, data)
        runner.after("start")
        for workload in selected:
            _say(f"--- {workload} ---")
            if workload == "install":
                runner.install(cold_runs, warm_runs)
            elif workload == "cold-large":
                runner.cold_large()
            else:
                runner.warm(workload)
        ours = next((t for t in targets if t.name == "mypypi2"), None)
        if ours is not None and not args.no_profile:
            for workload in args.profile or _worst(data):
                runner.profile(ours, workload, timestamp)
    finally:
        _say("stopping everything")
        services.close()
    data["elapsed_s"] = round(time.monotonic() - began, 1)
    path = report.write(data, results_dir)
    print()
    print(report.markdown(data))
    _say(f"done in {data['elapsed_s']:.0f} s; results in {path} (and {path.with_suffix('.json')})")
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Results: the machine, every figure per target, the ratios; JSON and Markdown files."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]

from bench.proc import run

PEERS = ("proxpi", "devpi")
MAIN = ("mypypi2", "mypypi2-baseline", "proxpi", "devpi", "nginx")
SERVERS = ("mypypi2", "mypypi2-hypercorn", "mypypi2-uvicorn")
_LABELS = {
    "page-json-50": "page JSON, 50 files",
    "page-html-50": "page HTML, 50 files",
    "page-json-2000": "page JSON, 2,000 files",
    "page-html-2000": "page HTML, 2,000 files",
    "file-small": "small file (5 KB)",
    "file-large": "large file (20 MB), 8 connections",
    "pip-cold": "pip, cold",
    "uv-cold": "uv, cold",
    "pip-warm": "pip, warm",
    "uv-warm": "uv, warm",
    "cold-large": "32 concurrent cold requests, 20 MB",
}


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    system = platform.system()
    try:
        with open("/etc/os-release") as release:
            fields = dict(ln.rstrip().split("=", 1) for ln in release if "=" in ln)
        system = fields.get("PRETTY_NAME", system).strip('"')
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": system,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def tool_versions(wrk: str, uv: str, python: str) -> dict[str, str]:
    wrk_line = run([wrk, "-v"], check=False).stdout.split()
    pip = run([python, "-m", "pip", "--version"]).stdout.split()[1]
    return {
        "wrk": wrk_line[1] if len(wrk_line) > 1 else "?",
        "pip": pip,
        "uv": run([uv, "--version"]).stdout.split()[1],
    }


# -- formatting ------------------------------------------------------------------------


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and digits == 0:
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    if digits == 0 and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{max(digits, 2 if abs(value) < 10 else 1)}f}"


def _ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not theirs:
        return "—"
    return f"{ours / theirs:.2f}x"


def _cell(results: dict[str, Any], target: str, key: str) -> Any:
    entry = results.get(target)
    if not isinstance(entry, dict):
        return None
    if "error" in entry:
        return "error"
    return entry.get(key)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


_WARM_METRICS = (
    ("rps", "req/s", "higher"),
    ("p50_ms", "p50 ms", "lower"),
    ("p99_ms", "p99 ms", "lower"),
)
_LARGE_METRICS = (
    ("mb_per_s", "MB/s", "higher"),
    ("p50_ms", "p50 ms", "lower"),
    ("p99_ms", "p99 ms", "lower"),
)


def _metrics(workload: str) -> tuple[tuple[str, str, str], ...]:
    return _LARGE_METRICS if workload == "file-large" else _WARM_METRICS


def _present(targets: tuple[str, ...], available: dict[str, Any]) -> list[str]:
    return [t for t in targets if t in available]


def _warm_section(data: dict[str, Any]) -> list[str]:
    workloads = [w for w in _LABELS if w.startswith(("page-", "file-")) and w in data["workloads"]]
    if not workloads:
        return []
    targets = _present(MAIN, data["targets"])
    ratios = [t for t in targets if t != "mypypi2"]
    header = ["workload", "metric", "better", *targets, *(f"us/{t}" for t in ratios)]
    rows = []
    for workload in workloads:
        results = data["workloads"][workload]
        for key, label, better in _metrics(workload):
            values = [_cell(results, t, key) for t in targets]
            ours = _cell(results, "mypypi2", key)
            rows.append(
                [_LABELS[workload], label, better, *(_num(v) for v in values)]
                + [_ratio(ours, _cell(results, t, key)) for t in ratios]
            )
    lines = ["## Warm pages and files (wrk, 64 connections unless noted)", ""]
    lines += _table(header, rows)
    errors = [
        f"{w}/{t}: {n} errors"
        for w in workloads
        for t, r in data["workloads"][w].items()
        if isinstance(r, dict) and (n := r.get("errors"))
    ]
    if errors:
        lines += ["", "wrk errors (socket errors or non-2xx/3xx answers): " + "; ".join(errors)]
    return [*lines, ""]


def _install_section(data: dict[str, Any]) -> list[str]:
    installs = data["workloads"].get("install")
    if not installs:
        return []
    targets = _present(MAIN, data["targets"])
    ratios = [t for t in targets if t != "mypypi2"]
    names = {t: ("direct (nginx)" if t == "nginx" else t) for t in targets}
    header = ["install (40 packages)", *(names[t] for t in targets)]
    header += [f"us/{'direct' if t == 'nginx' else t}" for t in ratios]
    rows = []
    for kind in ("pip-cold", "uv-cold", "pip-warm", "uv-warm"):
        per_target = installs.get(kind, {})
        medians = {t: _median(per_target.get(t), "seconds") for t in targets}
        rows.append(
            [f"{_LABELS[kind]}, median s", *(_num(medians[t], 2) for t in targets)]
            + [_ratio(medians["mypypi2"], medians[t]) for t in ratios]
        )
    for kind in ("pip-cold", "uv-cold", "pip-warm", "uv-warm"):
        per_target = installs.get(kind, {})
        rows.append(
            [f"{_LABELS[kind]}, upstream requests"]
            + [
                "—" if t == "nginx" else _num(_median(per_target.get(t), "upstream_requests"))
                for t in targets
            ]
            + ["" for _ in ratios]
        )
    runs = data["settings"]
    lines = [
        f"## Installs (wall clock, median of {runs['cold_runs']} cold / {runs['warm_runs']} warm"
        " runs; lower is better)",
        "",
        *_table(header, rows),
        "",
        "Cold: the target has never seen the set (each cold run installs its own copy of the"
        " set). Warm: the same set again through the warmed target, into a fresh venv with a"
        " fresh client cache. Upstream requests: what reached nginx during the install.",
        "",
    ]
    return lines


def _median(runs: Any, key: str) -> float | None:
    if not isinstance(runs, list):
        return None
    values = [r[key] for r in runs if isinstance(r, dict) and r.get(key) is not None]
    return statistics.median(values) if values else None


def _cold_section(data: dict[str, Any]) -> list[str]:
    results = data["workloads"].get("cold-large")
    if not results:
        return []
    targets = _present(MAIN, results)
    rows = [
        [
            "upstream GETs for the file",
            *(_num(_cell(results, t, "upstream_gets")) for t in targets),
        ],
        [
            "bodies with the right sha256",
            *(
                f"{_cell(results, t, 'good_bodies')}/{_cell(results, t, 'clients')}"
                for t in targets
            ),
        ],
        ["HTTP statuses", *(_statuses(_cell(results, t, "statuses")) for t in targets)],
        ["answers redirected", *(_num(_cell(results, t, "redirected")) for t in targets)],
        ["wall time, s", *(_num(_cell(results, t, "wall_s"), 2) for t in targets)],
    ]
    return [
        "## 32 concurrent cold requests for a 20 MB file",
        "",
        *_table(["", *targets], rows),
        "",
        "nginx is the upstream itself: its column is the time the same 32 downloads take"
        " with no cache in between.",
        "",
    ]


def _statuses(statuses: Any) -> str:
    if not isinstance(statuses, dict):
        return "—"
    return ", ".join(f"{n} x {code}" for code, n in sorted(statuses.items()))


def _servers_section(data: dict[str, Any]) -> list[str]:
    servers = _present(SERVERS, data["targets"])
    if len(servers) < 2:
        return []
    workloads = [w for w in _LABELS if w.startswith(("page-", "file-")) and w in data["workloads"]]
    names = {s: data["targets"][s].get("server", s) for s in servers}
    header = ["workload", "metric", *(names[s] for s in servers)]
    header += [f"{names[s]}/{names['mypypi2']}" for s in servers if s != "mypypi2"]
    rows = []
    for workload in workloads:
        results = data["workloads"][workload]
        for key, label, _ in _metrics(workload)[:1] + _metrics(workload)[2:]:
            base = _cell(results, "mypypi2", key)
            rows.append(
                [_LABELS[workload], label, *(_num(_cell(results, s, key)) for s in servers)]
                + [_ratio(_cell(results, s, key), base) for s in servers if s != "mypypi2"]
            )
    return ["## mypypi2 under each ASGI server", "", *_table(header, rows), ""]


def _memory_section(data: dict[str, Any]) -> list[str]:
    rss = data.get("rss") or {}
    if not rss:
        return []
    targets = [t for t in (*MAIN, *SERVERS[1:]) if t in data["targets"]]
    header = ["after", *targets]
    if any("db_pss_mib" in r.get("mypypi2", {}) for r in rss.values()):
        header.append("mypypi2's PostgreSQL (PSS)")
    rows = []
    for workload, per_target in rss.items():
        row = [_LABELS.get(workload, workload)]
        for target in targets:
            m = per_target.get(target)
            row.append(f"{m['max_mib']:.0f} / {m['total_mib']:.0f}" if m else "—")
        if len(header) > len(targets) + 1:
            db = per_target.get("mypypi2", {}).get("db_pss_mib")
            row.append(f"{db:.0f}" if db is not None else "—")
        rows.append(row)
    return [
        "## Memory: RSS in MiB, largest process / whole process tree",
        "",
        *_table(header, rows),
        "",
        "The process tree is the service's leader and every worker; mypypi2's embedded"
        " PostgreSQL runs as its own processes and is shown apart, as the sum of their PSS"
        " (shared buffers counted once). devpi-server is one process.",
        "",
    ]


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    s = data["settings"]
    lines = [
        f"# mypypi2 benchmark, {data['timestamp']}" + (" (quick)" if s.get("quick") else ""),
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, kernel"
        f" {m['kernel']}, Python {m['python']}; load average at start"
        f" {', '.join(map(str, m['loadavg_at_start']))}.",
        "",
        "Targets (all on loopback, fresh state, pulling from the same local nginx upstream):",
        "",
    ]
    for name, info in data["targets"].items():
        versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
        lines.append(f"- **{name}**: {versions}; {info.get('notes', '')}")
    tools = ", ".join(f"{k} {v}" for k, v in data["tools"].items())
    lines += [
        "",
        f"Clients: {tools}. wrk -t{s['wrk_threads']} for {s['seconds']:g} s per target and"
        f" workload, after a checked warm-up; workers per service: {s['workers']}.",
        "Ratios are mypypi2's figure divided by the other's (see the `better` column for the"
        " direction).",
        "",
    ]
    for section in (
        _warm_section,
        _install_section,
        _cold_section,
        _servers_section,
        _memory_section,
    ):
        lines += section(data)
    if data.get("failures"):
        lines += ["## Failures", ""]
        lines += [f"- {f}" for f in data["failures"]]
        lines.append("")
    for workload, summary in (data.get("profiles") or {}).items():
        lines += [
            f"## Profile: mypypi2 on {_LABELS.get(workload, workload)}",
            "",
            f"py-spy on every worker during one extra (unreported) run. {summary}",
            "",
        ]
    return "\n".join(lines)


def write(data: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stem = data["timestamp"].replace(":", "").replace("-", "")
    (directory / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    text = markdown(data)
    (directory / f"{stem}.md").write_text(text)
    (directory / "latest.md").write_text(text)
    return directory / f"{stem}.md"

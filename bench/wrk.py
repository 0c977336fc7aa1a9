"""Load with wrk: a fixed number of connections for a fixed time, figures as JSON.

The Lua script only adds a `done` hook printing the summary and latency percentiles
(wrk's own are in microseconds) on one line we parse.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.proc import run

_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, "connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %.0f, ' ..
    '"p90_us": %.0f, "p99_us": %.0f, "max_us": %.0f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    mb_per_s: float  # 10^6 bytes per second, bodies and headers
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors (connect, read, write, timeout) + non-2xx/3xx answers
    connections: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def load(
    wrk: str,
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    headers: dict[str, str] | None = None,
    work: Path,
) -> WrkResult:
    script = work / "bench.lua"
    if not script.exists():
        work.mkdir(parents=True, exist_ok=True)
        script.write_text(_SCRIPT)
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout=30s",
        "-s",
        str(script),
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    output = run([*argv, url], timeout=seconds + 120).stdout
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    raw = json.loads(line.removeprefix("BENCH "))
    elapsed = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"] + raw["status"]
    return WrkResult(
        requests=int(raw["requests"]),
        seconds=round(elapsed, 3),
        rps=round(raw["requests"] / elapsed, 1),
        mb_per_s=round(raw["bytes"] / elapsed / 1e6, 1),
        p50_ms=round(raw["p50_us"] / 1000, 3),
        p90_ms=round(raw["p90_us"] / 1000, 3),
        p99_ms=round(raw["p99_us"] / 1000, 3),
        max_ms=round(raw["max_us"] / 1000, 3),
        errors=int(errors),
        connections=connections,
    )

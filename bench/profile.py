"""`--profile WORKLOAD`: py-spy samples mypypi2's workers during one more wrk run.

The profiled run is extra (sampling pauses the workers, so its figures are not reported);
the raw stacks are kept next to the results and summarised: where the workers' CPU went,
by the function on top of the stack (self) and by every function on it (inclusive).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.targets import VENV_BIN, Target

RATE = 100  # samples per second and process


def record(
    target: Target, seconds: float, workers: int, output: Path, load: Callable[[], object]
) -> str:
    """Sample `target`'s process tree while `load()` runs; a Markdown summary."""
    assert target.service is not None
    output.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            str(VENV_BIN / "py-spy"),
            "record",
            "--pid",
            str(target.service.pid),
            "--subprocesses",
            "--format",
            "raw",
            "--nolineno",
            "--gil",  # only samples where Python runs: what the workers' CPU went into
            "--rate",
            str(RATE),
            "--duration",
            str(max(1, round(seconds))),
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    worker = threading.Thread(target=load)
    worker.start()
    try:
        _, errors = spy.communicate(timeout=seconds + 120)
    except BaseException:
        spy.kill()
        raise
    finally:
        worker.join()
    if not output.exists():
        print(f"bench: py-spy wrote nothing: {errors.strip()[-500:]}", file=sys.stderr)
        return "py-spy recorded nothing (see stderr)."
    return summarise(output, RATE * max(1, round(seconds)) * workers)


def summarise(path: Path, possible: int, top: int = 12) -> str:
    """Top functions; `possible`: samples had every worker held the GIL all along."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return "no samples."

    def table(counter: Counter[str]) -> list[str]:
        rows = ["| share | function |", "| --- | --- |"]
        rows += [f"| {n / total:.1%} | `{f}` |" for f, n in counter.most_common(top)]
        return rows

    # Frames on (nearly) every stack are the process's entry points: noise here.
    inclusive = Counter({f: n for f, n in inclusive.items() if n < 0.9 * total})
    return "\n".join(
        [
            f"{total} samples with the GIL held, i.e. Python ran {total / possible:.0%} of"
            " the workers' time (the rest: granian's Rust side, the kernel, waiting); raw"
            f" stacks in `bench/work/profiles/{path.name}`. Shares are of those samples.",
            "",
            "Self (on top of the stack):",
            "",
            *table(own),
            "",
            "Inclusive (anywhere on the stack, entry points left out):",
            "",
            *table(inclusive),
        ]
    )

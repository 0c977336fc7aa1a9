"""Resident memory of a target's process tree (and of its database, kept apart)."""

from __future__ import annotations

import psutil  # type: ignore[import-untyped, unused-ignore]

from bench.targets import Target

MIB = 1024 * 1024


def _rss(processes: list[psutil.Process]) -> list[int]:
    sizes = []
    for process in processes:
        try:
            sizes.append(process.memory_info().rss)
        except psutil.Error:
            continue
    return sizes


def measure(target: Target) -> dict[str, float | int]:
    """Largest process and total RSS in MiB; `db_pss_mib` for a separate database."""
    sizes = _rss(target.processes())
    result: dict[str, float | int] = {
        "processes": len(sizes),
        "max_mib": round(max(sizes, default=0) / MIB, 1),
        "total_mib": round(sum(sizes) / MIB, 1),
    }
    db = _pss(target.db_processes())
    if db:
        result["db_pss_mib"] = round(sum(db) / MIB, 1)
    return result


def _pss(processes: list[psutil.Process]) -> list[int]:
    """Proportional set sizes: PostgreSQL's shared buffers counted once, not per process."""
    sizes = []
    for process in processes:
        try:
            sizes.append(process.memory_full_info().pss)
        except (psutil.Error, AttributeError):
            continue
    return sizes

"""How `serve` hands what it resolved once to its worker processes (see asgi.py)."""

from __future__ import annotations

import msgspec

from mypypi2.config.options import Config

HANDOFF_VARIABLE = "MYPYPI2_WORKER_CONFIG"
# The replica's metrics directory (metrics.py): prometheus_client's own variable, read when
# it is imported, so serve sets it before any worker starts.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class WorkerHandoff(msgspec.Struct, frozen=True):
    """What `serve` resolved once (config, database) for its worker processes."""

    config: Config
    dsn: str
    shutdown_flag: str = ""  # created by `serve` when it starts shutting down (see servers.py)


def encode_handoff(config: Config, dsn: str, shutdown_flag: str = "") -> str:
    return msgspec.json.encode(WorkerHandoff(config, dsn, shutdown_flag)).decode()


def decode_handoff(text: str) -> WorkerHandoff:
    return msgspec.json.decode(text, type=WorkerHandoff)

"""Worker entry point for the ASGI servers: `mypypi2.asgi:create` (an app factory).

`mypypi2 serve` resolves the configuration and the database once, migrates, and hands both
to its worker processes through one environment variable, so no worker re-reads files,
starts a database or races another worker's migrations.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.types import ASGIApp

from mypypi2.app import create_app
from mypypi2.config import HANDOFF_VARIABLE, METRICS_DIR_VARIABLE, decode_handoff
from mypypi2.logs import configure


def create() -> ASGIApp:
    handoff = decode_handoff(os.environ[HANDOFF_VARIABLE])
    configure(handoff.config.logging.format)
    flag = Path(handoff.shutdown_flag) if handoff.shutdown_flag else None
    metrics_dir = os.environ.get(METRICS_DIR_VARIABLE)
    return create_app(handoff.config, handoff.dsn, shutdown_flag=flag, metrics_dir=metrics_dir)

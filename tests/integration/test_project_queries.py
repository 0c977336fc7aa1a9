"""queries/projects.py against PostgreSQL: a saved page reads back as it was given."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import asyncpg
import pytest

from mypypi2.db import create_pool, is_refusal
from mypypi2.models import FileEntry, ProjectPage, Validators
from mypypi2.queries import projects

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
# Every field set, each to a value no other field could be mistaken for.
FULL = FileEntry(
    filename="demo-1.0-py3-none-any.whl",
    url="https://files.example.invalid/d/demo-1.0-py3-none-any.whl",
    hashes={"sha256": "ab" * 32, "md5": "cd" * 16},
    requires_python=">=3.9",
    yanked="broken build",
    core_metadata={"sha256": "ef" * 32},
    size=2**40 + 1,
    upload_time=dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
    provenance="https://example.invalid/provenance/demo-1.0",
    gpg_sig=False,
)
BARE = FileEntry(
    filename="demo-0.9.tar.gz", url="https://files.example.invalid/demo-0.9.tar.gz", hashes={}
)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    # The service's pool: its connections carry the jsonb codec the queries rely on.
    pool = await create_pool(database, 1, 1)
    yield pool
    await pool.close()


def page(*files: FileEntry) -> ProjectPage:
    return ProjectPage(name="demo", files=files, versions=("0.9", "1.0"), last_serial=7)


async def save(pool: asyncpg.Pool, saved: ProjectPage) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await projects.save_page(connection, "repo", saved, Validators(), b"hash", NOW)


async def test_every_field_and_the_order_read_back(pool: asyncpg.Pool) -> None:
    saved = page(BARE, FULL)
    await save(pool, saved)
    assert await projects.get_page(pool, "repo", "demo") == saved
    reordered = page(FULL, BARE)
    await save(pool, reordered)
    assert await projects.get_page(pool, "repo", "demo") == reordered


async def test_a_file_the_page_drops_leaves_it_and_comes_back(pool: asyncpg.Pool) -> None:
    await save(pool, page(BARE, FULL))
    await save(pool, page(FULL))
    assert await projects.get_page(pool, "repo", "demo") == page(FULL)
    await save(pool, page(BARE, FULL))
    assert await projects.get_page(pool, "repo", "demo") == page(BARE, FULL)


async def test_an_empty_page_saves(pool: asyncpg.Pool) -> None:
    await save(pool, page(BARE))
    await save(pool, page())
    assert await projects.get_page(pool, "repo", "demo") == page()


async def test_text_postgresql_cannot_hold_is_a_refusal(pool: asyncpg.Pool) -> None:
    # The parsers never let a NUL through; should one come, it fails as a refusal (the page
    # is not stored), never as an outage.
    with pytest.raises(Exception) as caught:
        await save(pool, page(FileEntry(filename="a\x00.tar.gz", url=BARE.url, hashes={})))
    assert is_refusal(caught.value)
    assert await projects.get_page(pool, "repo", "demo") is None

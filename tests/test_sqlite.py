"""SQLite's settings hold on every connection the app opens: WAL, foreign keys, and
synchronous=FULL, so that an acknowledged write survives a power cut (SPEC 6.8)."""

import asyncio
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contactbase.db import Database

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


async def pragmas_of_every_connection(
    engine: AsyncEngine, count: int
) -> list[tuple[int, str, int]]:
    """synchronous, journal_mode and foreign_keys, read on `count` connections held at once
    (so that each is its own, not one handed out again)."""
    async with AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(engine.connect()) for _ in range(count)]
        found = []
        for connection in connections:
            values = []
            for pragma in ("synchronous", "journal_mode", "foreign_keys"):
                values.append((await connection.execute(text(f"PRAGMA {pragma}"))).scalar_one())
            found.append((values[0], values[1], values[2]))
        return found


async def test_every_connection_is_durable(db: Database, is_postgres: bool) -> None:
    if is_postgres:
        pytest.skip("SQLite's settings: the SQLite pass (make test-sqlite) checks them")
    readers, writers = await asyncio.gather(
        pragmas_of_every_connection(db.engine, 5),  # the fixture's pool size
        pragmas_of_every_connection(db.writer_engine, 1),
    )
    assert readers + writers == [(FULL, "wal", 1)] * 6

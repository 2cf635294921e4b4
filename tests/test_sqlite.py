"""SQLite's request path (contactbase.sqlite): its settings hold on every connection the app
opens (WAL, foreign keys, synchronous=FULL, so that an acknowledged write survives a power cut,
SPEC 6.8), and group commit keeps each write whole and alone."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contactbase.app import create_app
from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.sqlite import Embedded, SqliteConnection, Work
from tests.factories import CONTACTS, answered, bearer
from tests.test_operations import serve

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
SETTINGS = ("synchronous", "journal_mode", "foreign_keys")


@pytest.fixture
async def embedded(db: Database, is_postgres: bool) -> AsyncIterator[Embedded]:
    """The request path's SQLite connections; the tables a test makes are dropped after it
    (the session's database is shared, and the schema tests compare it with the models)."""
    if is_postgres or db.embedded is None:
        pytest.skip("SQLite's request path: the SQLite pass (make test-sqlite) checks it")
    yield db.embedded

    async def drop(connection: SqliteConnection) -> None:
        await connection.execute("DROP TABLE IF EXISTS child")
        await connection.execute("DROP TABLE IF EXISTS t")

    await db.embedded.write(drop)


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
            for pragma in SETTINGS:
                values.append((await connection.execute(text(f"PRAGMA {pragma}"))).scalar_one())
            found.append((values[0], values[1], values[2]))
        return found


async def pragmas_of(connection: SqliteConnection) -> tuple[int, str, int]:
    values = [(await connection.fetch(f"PRAGMA {pragma}", ()))[0][0] for pragma in SETTINGS]
    return values[0], values[1], values[2]


async def test_every_connection_is_durable(db: Database, embedded: Embedded) -> None:
    readers, writers = await asyncio.gather(
        pragmas_of_every_connection(db.engine, 5),  # the fixture's pool size
        pragmas_of_every_connection(db.writer_engine, 1),
    )
    taken = [await embedded.take() for _ in range(5)]
    try:
        request_path = [await pragmas_of(connection) for connection in taken]
        request_path.append(await embedded.write(pragmas_of))
    finally:
        for connection in taken:
            embedded.give(connection)
    assert readers + writers + request_path == [(FULL, "wal", 1)] * 12


async def make_table(embedded: Embedded) -> None:
    async def create(connection: SqliteConnection) -> None:
        await connection.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)")
        await connection.execute("DELETE FROM t")

    await embedded.write(create)


async def stored(embedded: Embedded) -> list[int]:
    reader = await embedded.take()
    try:
        return [n for (n,) in await reader.fetch("SELECT n FROM t ORDER BY n", ())]
    finally:
        embedded.give(reader)


def insert(n: int, *, then_fail: bool = False) -> Work:
    async def work(connection: SqliteConnection) -> int:
        await connection.execute("INSERT INTO t (n) VALUES (?)", (n,))
        if then_fail:
            raise ValueError(f"write {n} refused after its insert")
        return n

    return work


async def test_concurrent_writes_share_one_commit_and_a_failing_one_leaves_nothing(
    embedded: Embedded,
) -> None:
    await make_table(embedded)
    commits = embedded.commits
    outcomes = await asyncio.gather(
        *(embedded.write(insert(n, then_fail=n == 3)) for n in range(1, 7)),
        return_exceptions=True,
    )
    assert embedded.commits == commits + 1  # six writes, one transaction
    assert outcomes[:2] + outcomes[3:] == [1, 2, 4, 5, 6]
    assert isinstance(outcomes[2], ValueError)
    assert await stored(embedded) == [1, 2, 4, 5, 6]  # write 3 rolled back to its savepoint


async def test_a_failed_commit_fails_every_write_of_its_group(embedded: Embedded) -> None:
    """A commit that fails (here a foreign key checked at COMMIT) acknowledges none of the
    writes it held; the writer goes on with the next ones."""
    await make_table(embedded)

    async def create_parent(connection: SqliteConnection) -> None:
        await connection.execute("CREATE TABLE IF NOT EXISTS child (p INTEGER REFERENCES t(n))")

    await embedded.write(create_parent)

    async def orphan(connection: SqliteConnection) -> None:
        await connection.execute("PRAGMA defer_foreign_keys = ON")
        await connection.execute("INSERT INTO child (p) VALUES (999)")

    outcomes = await asyncio.gather(
        embedded.write(insert(1)),
        embedded.write(orphan),
        embedded.write(insert(2)),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, sqlite3.IntegrityError) for outcome in outcomes), outcomes
    assert await stored(embedded) == []
    assert await embedded.write(insert(3)) == 3
    assert await stored(embedded) == [3]


async def test_a_file_that_cannot_be_opened_is_503_without_a_trace(
    embedded: Embedded, tmp_path: Path
) -> None:
    """The request path's own connections fail as the engine's do: 503, the request id, no
    detail of the failure."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/missing/dir/x.db", redis_url=None)
    async for http in serve(create_app(settings)):
        response = await http.get(f"{CONTACTS}/1", headers=bearer("cb_" + "A" * 43))
    assert response.status_code == 503
    assert answered(response) == {"message": "The database is unavailable; retry in a few seconds."}
    assert "sqlite" not in response.text.lower()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", f"{CONTACTS}/1", {"names": ["Ada"]}),
        (
            "POST",
            f"{CONTACTS}/exports",
            {"start_date": "2026-01-01 00:00:00", "end_date": "2026-12-31 23:59:59"},
        ),
        ("POST", CONTACTS, {"emails": ["ada@example.com"]}),
        ("DELETE", f"{CONTACTS}/1", None),
    ],
)
async def test_an_unknown_key_is_refused_without_waiting_for_the_write_lock(
    client: httpx.AsyncClient,
    database_url: str,
    embedded: Embedded,
    method: str,
    path: str,
    body: dict[str, object] | None,
) -> None:
    """Finding 8 of issue 16: the key is checked before any write lock is asked for, so
    unauthenticated requests cannot queue behind (or hold up) the Space's writes."""
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the file's write lock
    try:
        async with asyncio.timeout(5):  # the writer waits up to 10 s for a lock
            response = await client.request(
                method, path, json=body, headers=bearer("cb_" + "x" * 43)
            )
        assert response.status_code == 401
    finally:
        holder.rollback()
        holder.close()

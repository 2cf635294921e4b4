"""The embedded default under load: contactbase on SQLite as `make run` serves it (`contactbase
serve`, one worker, no Redis), beside plain `sqlite3` doing the same work as fast as it can.

The ceilings run in this process with Python's sqlite3 on the same file, with the app's pragmas
(WAL, synchronous=FULL): a create is the contact's row and its eight values (what the app
writes for a new seed-shaped contact), in transactions of as many contacts as the app's writer
committed together during the same load (its group commit), each in a savepoint as the app
runs it; and, for reference, each contact committed in a transaction of its own. A get is one
read transaction of the app's own statements, compiled for SQLite: the check for changes that
stands in for the key look-up once the key is cached (`PRAGMA data_version`), the contact's
row, its values.
"""

import asyncio
import random
import re
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql import ClauseElement

from contactbase.contacts.reads import CONTACT_ROW_QUERY, CONTACT_VALUES
from contactbase.prepared import Prepared

PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=10000", "synchronous=FULL")
VALUE_TABLES = ("contact_emails", "contact_phones", "contact_names", "contact_locations")


def connect(path: Path) -> sqlite3.Connection:
    """A connection as the app configures its own: autocommit off by hand, the same pragmas."""
    connection = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        connection.execute(f"PRAGMA {pragma}")
    return connection


def contact_rows(space_id: int, n: str) -> tuple[tuple[Any, ...], dict[str, list[tuple[str, str]]]]:
    """A seed-shaped contact: its row's values and, by table, its (value, normalised) pairs."""
    values = {
        "contact_emails": [(f"{n}@example.com",) * 2, (f"{n}@example.org",) * 2],
        "contact_phones": [("+1234567890", "1234567890"), ("+0987654321", "0987654321")],
        "contact_names": [("John Doe",) * 2, ("Johnny",) * 2],
        "contact_locations": [("New York, NY",) * 2, ("Los Angeles, CA",) * 2],
    }
    now = "2026-11-26 00:00:00.000000"
    row = (space_id, f"{n}@example.com", "+1234567890", "John Doe", "New York, NY", now, now)
    return row, values


def insert(connection: sqlite3.Connection, space_id: int, n: str) -> None:
    """One contact and its eight values, in the transaction the caller holds."""
    row, values = contact_rows(space_id, n)
    cursor = connection.execute(
        "INSERT INTO contacts (space_id, email, phone, name, location, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        row,
    )
    for table, pairs in values.items():
        connection.executemany(
            f"INSERT INTO {table} (space_id, contact_id, position, value, normalised)"
            " VALUES (?, ?, ?, ?, ?)",
            [(space_id, cursor.lastrowid, p, *pair) for p, pair in enumerate(pairs)],
        )


def seed(path: Path, space_id: int, count: int) -> tuple[int, int]:
    """`count` seed-shaped contacts (seed{n}@example.com), in one transaction; then ANALYZE."""
    with closing(connect(path)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        for n in range(1, count + 1):
            insert(connection, space_id, f"seed{n}")
        connection.execute("COMMIT")
        connection.execute("ANALYZE")
        first, last = connection.execute("SELECT min(id), max(id) FROM contacts").fetchone()
    return int(first), int(last)


def create_ceiling(path: Path, space_id: int, seconds: float, group: int = 1) -> float:
    """New seed-shaped contacts per second, `group` to a transaction, each in a savepoint of
    its own as the app's writer runs them (group=1: each committed in its own transaction)."""
    with closing(connect(path)) as connection:
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            connection.execute("BEGIN IMMEDIATE")
            for _ in range(group):
                connection.execute("SAVEPOINT one_write")
                insert(connection, space_id, f"ceiling-{group}-{done}")
                connection.execute("RELEASE one_write")
                done += 1
            connection.execute("COMMIT")
        return done / (time.perf_counter() - began)


def writer_counts(port: int) -> tuple[float, float]:
    """The server's SQLite writer: transactions committed, and the writes they held."""
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = dict(re.findall(r"^contactbase_sqlite_(commits|writes)_total (\S+)$", metrics, re.M))
    return float(found["commits"]), float(found["writes"])


def _sqlite_sql(prepared: Prepared[Any]) -> tuple[str, list[str]]:
    """The app's statement as SQLite runs it, and the names of its ? parameters in order."""
    compiled = cast(ClauseElement, prepared.statement).compile(dialect=sqlite.dialect())
    return str(compiled), list(compiled.positiontup or ())


def get_ceiling(path: Path, space_id: int, ids: tuple[int, int], seconds: float) -> float:
    """Gets per second: the app's three statements of a get (its key cached) in one read
    transaction."""
    statements = [("PRAGMA data_version", [])]
    statements += [_sqlite_sql(prepared) for prepared in (CONTACT_ROW_QUERY, CONTACT_VALUES)]
    pick = random.Random(7)
    with closing(connect(path)) as connection:
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            params = {"space_id": space_id, "contact_id": pick.randint(*ids)}
            connection.execute("BEGIN")
            for sql, names in statements:
                connection.execute(sql, [params[name] for name in names]).fetchall()
            connection.execute("COMMIT")
            done += 1
        return done / (time.perf_counter() - began)


def scenarios(wrk_path: str, port: int, connections: int, seconds: int, tag: str) -> dict[str, Any]:
    """Create and get through `contactbase serve` on a fresh SQLite file (a fresh server for
    each), then the plain-sqlite3 ceilings on the same file; with their ratios."""
    from database import fresh_database
    from harness import make_key, scenario, start_server
    from procs import workers_of

    directory = Path(tempfile.mkdtemp(prefix="contactbase-bench-sqlite-"))
    path = directory / "bench.db"
    url = f"sqlite:///{path}"
    fresh_database(url)
    key = asyncio.run(make_key(url))
    with closing(connect(path)) as connection:
        space_id = int(connection.execute("SELECT id FROM spaces").fetchone()[0])
    first, last = seed(path, space_id, 10_000)
    results: dict[str, Any] = {}
    for mode in ("create", "get"):
        print(f"bench: SQLite {mode} (contactbase serve, as make run starts it) ...", flush=True)
        server = start_server(port, 1, None, url)
        try:
            args = [mode, key, tag + "s", "10000", str(first), str(last)]
            results[f"sqlite_{mode}"] = scenario(
                wrk_path, port, workers_of(server.pid), args, seconds, connections
            )
            if mode == "create":
                commits, writes = writer_counts(port)
                results["sqlite_writes_per_commit"] = round(writes / commits, 2)
        finally:
            server.terminate()
            server.wait(20)
    print("bench: SQLite ceilings (plain sqlite3, the same rows and statements) ...", flush=True)
    # The honest ceiling groups writes into transactions as the app's writer did under the
    # same load; one commit per contact is the reference for the target.
    group = max(1, round(results["sqlite_writes_per_commit"]))
    results["sqlite_create_ceiling_tps"] = round(create_ceiling(path, space_id, seconds, group), 1)
    results["sqlite_create_commit_each_tps"] = round(create_ceiling(path, space_id, seconds), 1)
    results["sqlite_get_ceiling_tps"] = round(
        get_ceiling(path, space_id, (first, last), seconds), 1
    )
    return results

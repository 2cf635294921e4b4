"""`serve` checks what it needs before it starts (SPEC 6.9): it refuses a database that is
missing, unreachable or not migrated, in one line, and never creates a database file; it says
when Redis is unreachable, and serves all the same (failing open, SPEC 2). /readyz names the
same causes, and the export worker logs a missing schema once, not every second."""

import asyncio
import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from contactbase.app import close, create_app
from contactbase.contacts.export_worker import ExportWorker
from contactbase.db import Database
from contactbase.migrations import schema_head
from contactbase.settings import Settings
from tests.test_cli_errors import Case, failed, operator_env
from tests.test_headers import contactbase
from tests.test_ratelimit import free_port, wait_until_up

OLD_SCHEMA = "20200101_0001"


def test_serve_before_migrate_refuses_and_creates_no_file(tmp_path: Path) -> None:
    case = Case(operator_env(tmp_path))
    for options in ([], ["--json"]):
        line = failed(case, "serve", "--port", str(free_port()), *options, cwd=tmp_path)
        assert line == (
            f"error: There is no database at {tmp_path / 'contactbase.db'}: run `contactbase "
            "migrate` to create it, or set CONTACTBASE_DATABASE_URL to your database."
        )
    assert list(tmp_path.iterdir()) == []


def test_serve_refuses_an_unreachable_postgresql(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:1/contactbase"
    case = Case(operator_env(tmp_path, CONTACTBASE_DATABASE_URL=url))
    line = failed(case, "serve", "--port", str(free_port()), cwd=tmp_path)
    assert line.startswith("error: The database is unreachable (connection refused): start ")


def outdate(database: Path, version: str = OLD_SCHEMA) -> None:
    """As if the database had been migrated by an older contactbase."""
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (version,))


def test_serve_refuses_a_schema_of_another_version(tmp_path: Path) -> None:
    env = operator_env(tmp_path)
    contactbase(env, "migrate")
    outdate(tmp_path / "contactbase.db")
    line = failed(Case(env), "serve", "--port", str(free_port()), cwd=tmp_path)
    assert line == (
        f"error: The schema is at {OLD_SCHEMA}, this version needs {schema_head()}: "
        "run `contactbase migrate`."
    )


@contextlib.contextmanager
def serving(env: dict[str, str], cwd: Path) -> Iterator[tuple[int, list[str]]]:
    """`contactbase serve` on a spare port until the block ends; its port, and what it said
    on standard error up to the moment it listened."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "contactbase", "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    said: list[str] = []
    try:
        for line in server.stderr:
            said.append(line.rstrip("\n"))
            if "Uvicorn running on" in line:
                break
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        yield port, said
    finally:
        server.terminate()
        server.wait(20)
        server.stderr.close()


def test_serve_says_when_redis_is_unreachable_and_serves(tmp_path: Path) -> None:
    env = operator_env(tmp_path, CONTACTBASE_REDIS_URL="redis://127.0.0.1:1/0")
    contactbase(env, "migrate")
    with serving(env, tmp_path) as (port, said):
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
    warnings = [line for line in said if line.startswith("warning: Redis")]
    assert warnings == [
        "warning: Redis is unreachable (Error 111 connecting to 127.0.0.1:1. Connect call failed "
        "('127.0.0.1', 1)): requests are served without rate limits, and without their headers, "
        "until it answers; start it, or correct CONTACTBASE_REDIS_URL."
    ]
    assert ready.status_code == 200, ready.text


def test_serve_with_redis_answering_says_nothing_of_it(tmp_path: Path, redis_url: str) -> None:
    env = operator_env(tmp_path, CONTACTBASE_REDIS_URL=redis_url)
    contactbase(env, "migrate")
    with serving(env, tmp_path) as (_port, said):
        pass
    assert not [line for line in said if "Redis" in line]


async def readyz(settings: Settings) -> httpx.Response:
    app: FastAPI = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.get("/readyz")
    finally:
        await close(app)


def unavailable(response: httpx.Response) -> tuple[str, str]:
    """A 503 of SPEC 6.1's shape: its code and message."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body == {
        "message": body["message"],
        "status": "unavailable",
        "code": body["code"],
        "request_id": response.headers["x-request-id"],
    }
    return body["code"], body["message"]


async def test_readyz_names_an_unreachable_database() -> None:
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:1/nope", redis_url=None)
    assert unavailable(await readyz(settings)) == (
        "database_unavailable",
        "The database is unreachable (connection refused).",  # no host: anyone may ask
    )


async def test_readyz_names_a_missing_database_and_creates_none(tmp_path: Path) -> None:
    database = tmp_path / "contactbase.db"
    settings = Settings(database_url=f"sqlite:///{database}", redis_url=None)
    assert unavailable(await readyz(settings)) == (
        "schema_outdated",
        "The database has no schema: run `contactbase migrate`.",
    )
    assert not database.exists()


async def test_readyz_names_the_schema_versions(tmp_path: Path) -> None:
    env = operator_env(tmp_path)
    await asyncio.to_thread(contactbase, env, "migrate")
    outdate(tmp_path / "contactbase.db")
    settings = Settings(database_url=env["CONTACTBASE_DATABASE_URL"], redis_url=None)
    assert unavailable(await readyz(settings)) == (
        "schema_outdated",
        f"The schema is at {OLD_SCHEMA}, this version needs {schema_head()}: "
        "run `contactbase migrate`.",
    )


async def test_readyz_names_a_database_without_a_schema(tmp_path: Path) -> None:
    database = tmp_path / "contactbase.db"
    database.touch(mode=0o600)
    settings = Settings(database_url=f"sqlite:///{database}", redis_url=None)
    assert unavailable(await readyz(settings)) == (
        "schema_outdated",
        "The database has no schema, or an older one: run `contactbase migrate`.",
    )


@pytest.mark.skipif(
    os.geteuid() == 0, reason="as root, a folder's mode does not stop writes (see test_cli_errors)"
)
async def test_readyz_names_a_read_only_database(tmp_path: Path) -> None:
    env = operator_env(tmp_path / "data")
    (tmp_path / "data").mkdir()
    await asyncio.to_thread(contactbase, env, "migrate")
    (tmp_path / "data").chmod(0o500)
    try:
        settings = Settings(database_url=env["CONTACTBASE_DATABASE_URL"], redis_url=None)
        assert unavailable(await readyz(settings)) == (
            "database_unavailable",
            "The database is read-only: the service cannot write its file or folder.",
        )
    finally:
        (tmp_path / "data").chmod(0o700)


async def test_the_export_worker_logs_a_missing_schema_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "contactbase.db"
    database.touch(mode=0o600)
    db = Database(f"sqlite:///{database}", pool_size=1)
    worker = ExportWorker(db, tmp_path / "exports", poll_seconds=0.01)
    caplog.set_level(logging.WARNING, logger="contactbase.exports")
    task = asyncio.create_task(worker.run_forever())
    try:
        await asyncio.sleep(0.3)  # some thirty polls, each failing alike
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.dispose()
    logged = [record for record in caplog.records if record.name == "contactbase.exports"]
    assert len(logged) == 1, [record.getMessage() for record in logged]
    assert "no such table: contact_exports" in logged[0].getMessage()

"""Real databases for every test: SQLite by default, PostgreSQL when
CONTACTBASE_TEST_DATABASE_URL is set (as `make test` and CI do). The schema comes from the
migrations; each test starts from empty tables, so its assertions can be exact."""

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from alembic import command
from fastapi import FastAPI
from sqlalchemy import text

from contactbase.app import close, create_app
from contactbase.db import Database, async_url
from contactbase.migrations import migrations_config
from contactbase.settings import Settings

IN_CI = os.environ.get("CI") == "true"
TENANT_TABLES = (
    "contact_emails",
    "contact_phones",
    "contact_names",
    "contact_locations",
    "contact_exports",
    "idempotency_keys",
    "import_progress",
    "idempotency_contacts",
    "contact_tombstones",
    "contact_changes",
    "change_counters",
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_endpoints",
    "contacts",
    "api_keys",
    "spaces",
)


async def _reset_postgres(url: str) -> None:
    """Create the test database if needed and empty its schema, so migrations run from zero."""
    parsed = async_url(url)
    name = parsed.database
    server = dict(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username, password=parsed.password
    )
    admin = await asyncpg.connect(database="postgres", **server)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    connection = await asyncpg.connect(database=name, **server)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A freshly migrated database for this test run."""
    url = os.environ.get("CONTACTBASE_TEST_DATABASE_URL")
    if url:
        try:
            asyncio.run(_reset_postgres(url))
        except OSError as exc:
            message = f"PostgreSQL at {url} is unreachable: {exc}"
            if IN_CI:
                pytest.exit(message, returncode=1)
            pytest.skip(message)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'contactbase.db'}"
    command.upgrade(migrations_config(url), "head")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis (its database 15 by default); in CI it must answer."""
    url = os.environ.get("CONTACTBASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis at {url} is unreachable: {exc}")
        pytest.skip(f"Redis at {url} is unreachable: {exc}")
    return url


@pytest.fixture
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgres")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, redis_url=None, export_dir=tmp_path / "exports")


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """The test's own engines, on tables emptied before it starts."""
    database = Database(settings.database_url, pool_size=5)
    await empty_tables(database)
    yield database
    await database.dispose()


async def empty_tables(database: Database) -> None:
    """Every tenant table emptied, ids numbered from 1 again."""
    async with database.writer() as session, session.begin():
        if database.is_sqlite:
            for table in TENANT_TABLES:
                await session.execute(text(f"DELETE FROM {table}"))
            await session.execute(text("DELETE FROM sqlite_sequence"))
        else:
            await session.execute(
                text(f"TRUNCATE {', '.join(TENANT_TABLES)} RESTART IDENTITY CASCADE")
            )


@pytest.fixture
async def app(settings: Settings, db: Database) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    yield application
    await close(application)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the real app (in process, through ASGI)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path

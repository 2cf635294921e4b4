"""A fresh, migrated database for a benchmark run."""

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from sqlalchemy.engine import make_url

from contactbase.migrations import migrations_config


async def _recreate_postgres(url: str) -> None:
    parsed = make_url(url)
    admin = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database="postgres",
    )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{parsed.database}"')
    finally:
        await admin.close()


def fresh_database(url: str) -> None:
    """Drop and recreate the database (a SQLite file: delete it), then migrate it."""
    if url.startswith("sqlite"):
        path = Path(make_url(url).database or "")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        asyncio.run(_recreate_postgres(url))
    command.upgrade(migrations_config(url), "head")

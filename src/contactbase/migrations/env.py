"""Alembic environment: runs revisions over the async engine, in batch mode on SQLite."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from contactbase.contacts import models as _contacts  # noqa: F401  (registers the tables)
from contactbase.db import Base, async_url
from contactbase.settings import Settings
from contactbase.spaces import models as _spaces  # noqa: F401
from contactbase.webhooks import models as _webhooks  # noqa: F401

config = context.config


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    url = config.attributes.get("database_url") or Settings().database_url
    engine = create_async_engine(async_url(url), poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(run_on)
    await engine.dispose()


asyncio.run(run_online())

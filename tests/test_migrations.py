"""The migrations build exactly the schema the models describe, and run down and up again."""

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from contactbase.contacts import models as contacts_models
from contactbase.db import Base, async_url
from contactbase.migrations import migrations_config, schema_head
from contactbase.spaces import models as spaces_models
from contactbase.webhooks import models as webhooks_models

TABLES = {
    "alembic_version",
    "service_secrets",
    "spaces",
    "api_keys",
    "contacts",
    "contact_emails",
    "contact_exports",
    "idempotency_keys",
    "import_progress",
    "idempotency_contacts",
    "contact_tombstones",
    "contact_changes",
    "change_counters",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_attempts",
    "contact_phones",
    "contact_names",
    "contact_locations",
}


async def differences(database_url: str, metadata: MetaData) -> list[Any]:
    """What autogenerate would write to take the migrated database to `metadata`."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    engine = create_async_engine(async_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(database_url: str) -> None:
    assert contacts_models.Contact.__tablename__ in Base.metadata.tables
    assert spaces_models.ApiKey.__tablename__ in Base.metadata.tables
    assert webhooks_models.WebhookEndpoint.__tablename__ in Base.metadata.tables
    assert await differences(database_url, Base.metadata) == []


async def test_the_comparison_sees_the_database(database_url: str) -> None:
    """Guards the test above against comparing nothing with nothing."""
    found = await differences(database_url, MetaData())
    removed = {diff[1].name for diff in found if diff[0] == "remove_table"}
    assert removed == TABLES - {"alembic_version"}


def test_models_register_every_migrated_table() -> None:
    assert set(Base.metadata.tables) == TABLES - {"alembic_version"}


def tables_and_revision(path: Path) -> tuple[set[str], str | None]:
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            revision = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    return tables, revision


def signing_secrets(path: Path) -> list[str]:
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT name, value FROM service_secrets")).all()
    finally:
        engine.dispose()
    assert [name for name, _value in rows] == ["signing"]
    return [value for _name, value in rows]


def test_downgrade_to_base_then_upgrade_again(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    config = migrations_config(f"sqlite:///{path}")
    command.upgrade(config, "head")
    assert tables_and_revision(path) == (TABLES, schema_head())
    first_secret = signing_secrets(path)
    assert len(first_secret[0]) >= 43
    command.downgrade(config, "base")
    assert tables_and_revision(path) == ({"alembic_version"}, None)
    command.upgrade(config, "head")
    assert tables_and_revision(path) == (TABLES, schema_head())
    assert signing_secrets(path) != first_secret

"""plans that hold without statistics: the live-contacts window index, contactbase_each

Revision ID: 20261130_0003
Revises: 20261126_0002
Create Date: 2026-11-30

The list and exports read live contacts (merged_into_id IS NULL) by creation time. As a partial
index it no longer matches `space_id = $1 AND id = $2`, the query of the value tables' foreign
keys, so PostgreSQL plans those checks on the unique (space_id, id) index even on a fresh
database without statistics, instead of scanning the Space's contacts for each one.

PostgreSQL only: `contactbase_each(text[])`, `unnest` declared to return about 2 rows, for the
owners' look-up of a create (contacts/statements.py); not inlined (its SET clause sees to it),
so that its estimate is the same in generic and custom plans.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_0003"
down_revision: str | None = "20261126_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("merged_into_id IS NULL")


EACH = (
    "CREATE FUNCTION contactbase_each(text[]) RETURNS SETOF text LANGUAGE sql IMMUTABLE STRICT"
    " ROWS 2 SET search_path = pg_catalog AS 'SELECT unnest($1)'"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(EACH)
    # On PostgreSQL the new index is built without blocking writes (CONCURRENTLY, which runs
    # outside a transaction) before the old one goes, so the list never lacks an index.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_contacts_live_created_at",
            "contacts",
            ["space_id", "created_at"],
            unique=False,
            postgresql_where=LIVE,
            sqlite_where=LIVE,
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_contacts_space_id_created_at", table_name="contacts", postgresql_concurrently=True
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION contactbase_each(text[])")
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_contacts_space_id_created_at",
            "contacts",
            ["space_id", "created_at"],
            unique=False,
            postgresql_concurrently=True,
        )
        op.drop_index(
            "ix_contacts_live_created_at", table_name="contacts", postgresql_concurrently=True
        )

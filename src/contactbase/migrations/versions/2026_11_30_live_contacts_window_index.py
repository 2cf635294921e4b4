"""the creation-window index holds live contacts only

Revision ID: 20261130_0003
Revises: 20261126_0002
Create Date: 2026-11-30

The list and exports read live contacts (merged_into_id IS NULL) by creation time. As a partial
index it no longer matches `space_id = $1 AND id = $2`, the query of the value tables' foreign
keys, so PostgreSQL plans those checks on the unique (space_id, id) index even on a fresh
database without statistics, instead of scanning the Space's contacts for each one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_0003"
down_revision: str | None = "20261126_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("merged_into_id IS NULL")


def upgrade() -> None:
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

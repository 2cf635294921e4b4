"""list filters and fair exports: slot indexes, labels, an export's filters and claim time

Revision ID: 20261130_0008
Revises: 20261130_0007
Create Date: 2026-11-30

SPEC 6.7: `custom_field_filters` run in the database. Each number and date slot gets an index
on (Space, slot), partial on the slot being set, so contacts without it cost nothing. Spaces
get their slots' labels (`space set-label`); an export keeps the filters it was asked with,
and when a worker took it up (workers serve Spaces in turn, SPEC 6.8).
On a large PostgreSQL table the indexes take a while to build, and writes to `contacts` wait
for them (docs/filters.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_0008"
down_revision: str | None = "20261130_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXED = [f"profile_field_{n}" for n in range(16, 31)]


def upgrade() -> None:
    with op.batch_alter_table("contact_exports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("filters", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        for slot in INDEXED:
            batch_op.create_index(
                f"ix_contacts_space_id_{slot}",
                ["space_id", slot],
                unique=False,
                postgresql_where=sa.text(f"{slot} IS NOT NULL"),
                sqlite_where=sa.text(f"{slot} IS NOT NULL"),
            )
    with op.batch_alter_table("spaces", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "custom_field_labels", sa.JSON(), server_default=sa.text("'{}'"), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("spaces", schema=None) as batch_op:
        batch_op.drop_column("custom_field_labels")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        for slot in reversed(INDEXED):
            batch_op.drop_index(f"ix_contacts_space_id_{slot}")
    with op.batch_alter_table("contact_exports", schema=None) as batch_op:
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("filters")

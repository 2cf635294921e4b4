"""change feed: events and each Space's counter

Revision ID: 20261130_0006
Revises: 20261130_0005
Create Date: 2026-11-30

`contact_changes`: the change feed's events (SPEC 6.5), ids and times only, numbered after they
commit. `change_counters`: each Space's last number (contacts/changes.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_0006"
down_revision: str | None = "20261130_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contact_changes",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("space_id", ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("contact_id", ID, nullable=False),
        sa.Column("merged_into", ID, nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "type IN ('contact.created', 'contact.updated', 'contact.merged', 'contact.erased')",
            name=op.f("ck_contact_changes_type"),
        ),
        sa.ForeignKeyConstraint(
            ["space_id"], ["spaces.id"], name=op.f("fk_contact_changes_space_id_spaces")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_changes")),
        sa.UniqueConstraint("space_id", "seq", name=op.f("uq_contact_changes_space_id_seq")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("contact_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contact_changes_pending",
            ["space_id", "id"],
            unique=False,
            postgresql_where=sa.text("seq IS NULL"),
            sqlite_where=sa.text("seq IS NULL"),
        )
        batch_op.create_index("ix_contact_changes_occurred_at", ["occurred_at"], unique=False)
    op.create_table(
        "change_counters",
        sa.Column("space_id", ID, nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("purged_through", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id"], ["spaces.id"], name=op.f("fk_change_counters_space_id_spaces")
        ),
        sa.PrimaryKeyConstraint("space_id", name=op.f("pk_change_counters")),
    )


def downgrade() -> None:
    op.drop_table("change_counters")
    with op.batch_alter_table("contact_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_changes_occurred_at")
        batch_op.drop_index("ix_contact_changes_pending")
    op.drop_table("contact_changes")

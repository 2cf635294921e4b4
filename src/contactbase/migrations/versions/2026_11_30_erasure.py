"""erasure: tombstones, and the contacts idempotent answers name

Revision ID: 20261130_0005
Revises: 20261130_0004
Create Date: 2026-11-30

`contact_tombstones`: what is left of an erased contact (id, Space, time). `idempotency_contacts`:
the contacts a stored idempotent answer names, so that erasing one deletes the answer (SPEC 6.4).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261130_0005"
down_revision: str | None = "20261130_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contact_tombstones",
        sa.Column("space_id", ID, nullable=False),
        sa.Column("contact_id", ID, nullable=False),
        sa.Column("erased_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id"], ["spaces.id"], name=op.f("fk_contact_tombstones_space_id_spaces")
        ),
        sa.PrimaryKeyConstraint("space_id", "contact_id", name=op.f("pk_contact_tombstones")),
    )
    op.create_table(
        "idempotency_contacts",
        sa.Column("space_id", ID, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("contact_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id", "key"],
            ["idempotency_keys.space_id", "idempotency_keys.key"],
            name=op.f("fk_idempotency_contacts_space_id_idempotency_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "space_id", "key", "contact_id", name=op.f("pk_idempotency_contacts")
        ),
    )
    with op.batch_alter_table("idempotency_contacts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_idempotency_contacts_space_id_contact_id", ["space_id", "contact_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("idempotency_contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_idempotency_contacts_space_id_contact_id")
    op.drop_table("idempotency_contacts")
    op.drop_table("contact_tombstones")

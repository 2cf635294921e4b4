"""custom fields and exports

Revision ID: 20261126_0002
Revises: 20261126_0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261126_0002"
down_revision: str | None = "20261126_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contact_exports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("space_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("window_end", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("completed_at", sa.DateTime(), nullable=True),
        sa.Column("contacts", sa.Integer(), nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'processing', 'completed', 'failed')",
            name=op.f("ck_contact_exports_status"),
        ),
        sa.ForeignKeyConstraint(
            ["space_id"], ["spaces.id"], name=op.f("fk_contact_exports_space_id_spaces")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_exports")),
    )
    with op.batch_alter_table("contact_exports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contact_exports_space_id"), ["space_id"], unique=False)
        batch_op.create_index(
            "ix_contact_exports_status_created_at", ["status", "created_at"], unique=False
        )

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("profile_field_1", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_2", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_3", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_4", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_5", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_6", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_7", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_8", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_9", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_10", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_11", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_12", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_13", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_14", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_15", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_16", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_17", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_18", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_19", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_20", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_21", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_22", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_23", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_24", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_25", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_26", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_27", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_28", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_29", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("profile_field_30", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("profile_field_30")
        batch_op.drop_column("profile_field_29")
        batch_op.drop_column("profile_field_28")
        batch_op.drop_column("profile_field_27")
        batch_op.drop_column("profile_field_26")
        batch_op.drop_column("profile_field_25")
        batch_op.drop_column("profile_field_24")
        batch_op.drop_column("profile_field_23")
        batch_op.drop_column("profile_field_22")
        batch_op.drop_column("profile_field_21")
        batch_op.drop_column("profile_field_20")
        batch_op.drop_column("profile_field_19")
        batch_op.drop_column("profile_field_18")
        batch_op.drop_column("profile_field_17")
        batch_op.drop_column("profile_field_16")
        batch_op.drop_column("profile_field_15")
        batch_op.drop_column("profile_field_14")
        batch_op.drop_column("profile_field_13")
        batch_op.drop_column("profile_field_12")
        batch_op.drop_column("profile_field_11")
        batch_op.drop_column("profile_field_10")
        batch_op.drop_column("profile_field_9")
        batch_op.drop_column("profile_field_8")
        batch_op.drop_column("profile_field_7")
        batch_op.drop_column("profile_field_6")
        batch_op.drop_column("profile_field_5")
        batch_op.drop_column("profile_field_4")
        batch_op.drop_column("profile_field_3")
        batch_op.drop_column("profile_field_2")
        batch_op.drop_column("profile_field_1")

    with op.batch_alter_table("contact_exports", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_exports_status_created_at")
        batch_op.drop_index(batch_op.f("ix_contact_exports_space_id"))

    op.drop_table("contact_exports")

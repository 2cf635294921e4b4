"""initial schema

Revision ID: 20261126_0001
Revises:
Create Date: 2026-11-26
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "20261126_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_secrets")),
    )
    op.create_table(
        "spaces",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("rate_limits", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("status IN ('active', 'inactive')", name=op.f("ck_spaces_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spaces")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("space_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["space_id"], ["spaces.id"], name=op.f("fk_api_keys_space_id_spaces")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_space_id"), ["space_id"], unique=False)

    op.create_table(
        "contacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("space_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column(
            "merged_into_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id", "merged_into_id"],
            ["contacts.space_id", "contacts.id"],
            name="fk_contacts_alias",
        ),
        sa.ForeignKeyConstraint(
            ["space_id"], ["spaces.id"], name=op.f("fk_contacts_space_id_spaces")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("space_id", "id", name=op.f("uq_contacts_space_id_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contacts_merged_into_id"), ["merged_into_id"], unique=False
        )
        batch_op.create_index(
            "ix_contacts_space_id_created_at", ["space_id", "created_at"], unique=False
        )

    op.create_table(
        "contact_emails",
        sa.Column("space_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("normalised", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id", "contact_id"],
            ["contacts.space_id", "contacts.id"],
            name="fk_contact_emails_contact",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "space_id", "contact_id", "position", name=op.f("pk_contact_emails")
        ),
        sa.UniqueConstraint(
            "space_id", "normalised", name=op.f("uq_contact_emails_space_id_normalised")
        ),
    )
    op.create_table(
        "contact_locations",
        sa.Column("space_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("normalised", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id", "contact_id"],
            ["contacts.space_id", "contacts.id"],
            name="fk_contact_locations_contact",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "space_id", "contact_id", "position", name=op.f("pk_contact_locations")
        ),
        sa.UniqueConstraint(
            "space_id",
            "contact_id",
            "normalised",
            name=op.f("uq_contact_locations_space_id_contact_id_normalised"),
        ),
    )
    op.create_table(
        "contact_names",
        sa.Column("space_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("normalised", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id", "contact_id"],
            ["contacts.space_id", "contacts.id"],
            name="fk_contact_names_contact",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "space_id", "contact_id", "position", name=op.f("pk_contact_names")
        ),
        sa.UniqueConstraint(
            "space_id",
            "contact_id",
            "normalised",
            name=op.f("uq_contact_names_space_id_contact_id_normalised"),
        ),
    )
    op.create_table(
        "contact_phones",
        sa.Column("space_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("normalised", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id", "contact_id"],
            ["contacts.space_id", "contacts.id"],
            name="fk_contact_phones_contact",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "space_id", "contact_id", "position", name=op.f("pk_contact_phones")
        ),
        sa.UniqueConstraint(
            "space_id",
            "contact_id",
            "normalised",
            name=op.f("uq_contact_phones_space_id_contact_id_normalised"),
        ),
    )
    with op.batch_alter_table("contact_phones", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contact_phones_space_id_normalised", ["space_id", "normalised"], unique=False
        )

    # The key that signs cursors and download links, shared by every worker and host.
    secrets_table = sa.table("service_secrets", sa.column("name"), sa.column("value"))
    op.bulk_insert(secrets_table, [{"name": "signing", "value": secrets.token_urlsafe(32)}])


def downgrade() -> None:
    with op.batch_alter_table("contact_phones", schema=None) as batch_op:
        batch_op.drop_index("ix_contact_phones_space_id_normalised")

    op.drop_table("contact_phones")
    op.drop_table("contact_names")
    op.drop_table("contact_locations")
    op.drop_table("contact_emails")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_space_id_created_at")
        batch_op.drop_index(batch_op.f("ix_contacts_merged_into_id"))

    op.drop_table("contacts")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_space_id"))

    op.drop_table("api_keys")
    op.drop_table("spaces")
    op.drop_table("service_secrets")

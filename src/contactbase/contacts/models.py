"""Storage of contacts and their emails, phones, names and locations."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from contactbase.db import Base, Id

# The number and date slots (custom_fields.py), each indexed for the list's filters.
INDEXED_SLOTS = range(16, 31)


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        # Target of the value tables' foreign keys: a value row and its contact share a Space.
        UniqueConstraint("space_id", "id"),
        # An alias points at a contact of its own Space.
        ForeignKeyConstraint(
            ["space_id", "merged_into_id"],
            ["contacts.space_id", "contacts.id"],
            name="fk_contacts_alias",
        ),
        # The list's and exports' window, over live contacts only: as a partial index it cannot
        # serve `space_id = ? AND id = ?`, so the foreign keys' checks use the unique index
        # above even before the planner has statistics (a fresh database).
        Index(
            "ix_contacts_live_created_at",
            "space_id",
            "created_at",
            postgresql_where=text("merged_into_id IS NULL"),
            sqlite_where=text("merged_into_id IS NULL"),
        ),
        # custom_field_filters on number and date slots (SPEC 6.7): by Space, partial, so a
        # contact without the slot costs these indexes nothing.
        *(
            Index(
                f"ix_contacts_space_id_profile_field_{n}",
                "space_id",
                f"profile_field_{n}",
                postgresql_where=text(f"profile_field_{n} IS NOT NULL"),
                sqlite_where=text(f"profile_field_{n} IS NOT NULL"),
            )
            for n in INDEXED_SLOTS
        ),
        {"sqlite_autoincrement": True},  # ids are never reused, so cursors stay meaningful
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    space_id: Mapped[int] = mapped_column(Id, ForeignKey("spaces.id"))
    # The primary values (first of each collection); email is never null.
    email: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(Text)
    # Set when this contact was merged into another: the id stays an alias of the survivor.
    merged_into_id: Mapped[int | None] = mapped_column(Id, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    updated_at: Mapped[datetime] = mapped_column(DateTime())
    # Custom fields (see custom_fields.py): 1-15 text, 16-25 numbers, 26-30 dates (kept as
    # YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, the form sent, so they read back as they were written).
    profile_field_1: Mapped[str | None] = mapped_column(Text)
    profile_field_2: Mapped[str | None] = mapped_column(Text)
    profile_field_3: Mapped[str | None] = mapped_column(Text)
    profile_field_4: Mapped[str | None] = mapped_column(Text)
    profile_field_5: Mapped[str | None] = mapped_column(Text)
    profile_field_6: Mapped[str | None] = mapped_column(Text)
    profile_field_7: Mapped[str | None] = mapped_column(Text)
    profile_field_8: Mapped[str | None] = mapped_column(Text)
    profile_field_9: Mapped[str | None] = mapped_column(Text)
    profile_field_10: Mapped[str | None] = mapped_column(Text)
    profile_field_11: Mapped[str | None] = mapped_column(Text)
    profile_field_12: Mapped[str | None] = mapped_column(Text)
    profile_field_13: Mapped[str | None] = mapped_column(Text)
    profile_field_14: Mapped[str | None] = mapped_column(Text)
    profile_field_15: Mapped[str | None] = mapped_column(Text)
    profile_field_16: Mapped[float | None] = mapped_column(Double)
    profile_field_17: Mapped[float | None] = mapped_column(Double)
    profile_field_18: Mapped[float | None] = mapped_column(Double)
    profile_field_19: Mapped[float | None] = mapped_column(Double)
    profile_field_20: Mapped[float | None] = mapped_column(Double)
    profile_field_21: Mapped[float | None] = mapped_column(Double)
    profile_field_22: Mapped[float | None] = mapped_column(Double)
    profile_field_23: Mapped[float | None] = mapped_column(Double)
    profile_field_24: Mapped[float | None] = mapped_column(Double)
    profile_field_25: Mapped[float | None] = mapped_column(Double)
    profile_field_26: Mapped[str | None] = mapped_column(Text)
    profile_field_27: Mapped[str | None] = mapped_column(Text)
    profile_field_28: Mapped[str | None] = mapped_column(Text)
    profile_field_29: Mapped[str | None] = mapped_column(Text)
    profile_field_30: Mapped[str | None] = mapped_column(Text)


class ContactValue(Base):
    """One value of a contact's collection; `position` orders it, 0 being the primary."""

    __abstract__ = True

    space_id: Mapped[int] = mapped_column(Id, primary_key=True)
    contact_id: Mapped[int] = mapped_column(Id, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    # The compared form: lower-cased email, phone digits, trimmed name or location.
    normalised: Mapped[str] = mapped_column(Text)


def _belongs_to_contact(table: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["space_id", "contact_id"],
        ["contacts.space_id", "contacts.id"],
        name=f"fk_{table}_contact",
        ondelete="CASCADE",
    )


class ContactEmail(ContactValue):
    __tablename__ = "contact_emails"
    # The identity guard: an email identifies at most one contact in a Space.
    __table_args__ = (
        _belongs_to_contact("contact_emails"),
        UniqueConstraint("space_id", "normalised"),
    )


class ContactPhone(ContactValue):
    __tablename__ = "contact_phones"
    __table_args__ = (
        _belongs_to_contact("contact_phones"),
        UniqueConstraint("space_id", "contact_id", "normalised"),
        Index("ix_contact_phones_space_id_normalised", "space_id", "normalised"),
    )


class ContactName(ContactValue):
    __tablename__ = "contact_names"
    __table_args__ = (
        _belongs_to_contact("contact_names"),
        UniqueConstraint("space_id", "contact_id", "normalised"),
    )


class ContactLocation(ContactValue):
    __tablename__ = "contact_locations"
    __table_args__ = (
        _belongs_to_contact("contact_locations"),
        UniqueConstraint("space_id", "contact_id", "normalised"),
    )


class Export(Base):
    """An export of a Space's contacts created in a window; the job and its outcome in one row."""

    __tablename__ = "contact_exports"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'processing', 'completed', 'failed')", name="status"),
        # The workers' claim query: the oldest queued (or abandoned) export first.
        Index("ix_contact_exports_status_created_at", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    space_id: Mapped[int] = mapped_column(Id, ForeignKey("spaces.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    window_start: Mapped[datetime] = mapped_column(DateTime())  # UTC, inclusive
    window_end: Mapped[datetime] = mapped_column(DateTime())  # UTC, exclusive
    created_at: Mapped[datetime] = mapped_column(DateTime())
    # While processing: the worker's claim expires then unless renewed (a dead worker's export
    # is taken up again after it).
    lease_until: Mapped[datetime | None] = mapped_column(DateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime())
    contacts: Mapped[int | None] = mapped_column(Integer)
    failure: Mapped[str | None] = mapped_column(Text)
    # custom_field_filters, as the request sent them (validated); none: every contact.
    filters: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # When a worker last took it up: workers serve the Space served longest ago first.
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime())


class IdempotentRequest(Base):
    """A request sent with an Idempotency-Key (SPEC 6.2, contactbase.idempotency): in flight
    (no status yet) from its receipt until its answer is stored, in the same transaction as
    its effect; then that answer, until it expires."""

    __tablename__ = "idempotency_keys"
    # The clean-up's query: what has expired.
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    space_id: Mapped[int] = mapped_column(Id, ForeignKey("spaces.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # sha256 of method, path, query and the parsed body: a reuse with another request is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    # In flight: when the marker of a process that died lapses; answered: when the answer does.
    expires_at: Mapped[datetime] = mapped_column(DateTime())


class IdempotentContact(Base):
    """A contact that a stored idempotent answer names (its id, or an id in a batch's results):
    erasing the contact deletes the answer (SPEC 6.4), found here by contact."""

    __tablename__ = "idempotency_contacts"
    __table_args__ = (
        ForeignKeyConstraint(
            ["space_id", "key"],
            ["idempotency_keys.space_id", "idempotency_keys.key"],
            ondelete="CASCADE",
        ),
        Index("ix_idempotency_contacts_space_id_contact_id", "space_id", "contact_id"),
    )

    space_id: Mapped[int] = mapped_column(Id, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    contact_id: Mapped[int] = mapped_column(Id, primary_key=True)


class Tombstone(Base):
    """What is left of an erased contact (SPEC 6.4): its id, its Space, the time; no value."""

    __tablename__ = "contact_tombstones"

    space_id: Mapped[int] = mapped_column(Id, ForeignKey("spaces.id"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(Id, primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime())


class ContactChange(Base):
    """An event of the change feed (SPEC 6.5), written in the transaction of the change, ids
    and a time, never a value. Its `seq` is given later, by the first reader after its commit
    (contacts/changes.py)."""

    __tablename__ = "contact_changes"
    __table_args__ = (
        UniqueConstraint("space_id", "seq"),
        CheckConstraint(
            "type IN ('contact.created', 'contact.updated', 'contact.merged', 'contact.erased')",
            name="type",
        ),
        # The events still to number, in the order they were written.
        Index(
            "ix_contact_changes_pending",
            "space_id",
            "id",
            postgresql_where=text("seq IS NULL"),
            sqlite_where=text("seq IS NULL"),
        ),
        # The retention sweep's query: what is old.
        Index("ix_contact_changes_occurred_at", "occurred_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    space_id: Mapped[int] = mapped_column(Id, ForeignKey("spaces.id"))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(16))
    contact_id: Mapped[int] = mapped_column(Id)  # no foreign key: an erased contact is gone
    merged_into: Mapped[int | None] = mapped_column(Id)
    occurred_at: Mapped[datetime] = mapped_column(DateTime())


class ChangeCounter(Base):
    """A Space's last change number, and how far the retention has deleted. Its row is locked
    by whoever numbers the Space's events, one at a time (contacts/changes.py)."""

    __tablename__ = "change_counters"

    space_id: Mapped[int] = mapped_column(Id, ForeignKey("spaces.id"), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    # The events up to this number have been deleted (retention): `after` below it is a 410.
    purged_through: Mapped[int] = mapped_column(BigInteger)


class ImportProgress(Base):
    """How far `contactbase import` has committed a file into a Space: written with each
    batch, so that `--resume` continues after the last committed line."""

    __tablename__ = "import_progress"

    space_id: Mapped[int] = mapped_column(Id, ForeignKey("spaces.id"), primary_key=True)
    path: Mapped[str] = mapped_column(Text, primary_key=True)  # absolute
    # sha256 of the file's first `committed_bytes` bytes: a file changed since is not resumed.
    prefix_sha256: Mapped[str] = mapped_column(String(64))
    committed_bytes: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[int] = mapped_column(BigInteger)  # the last committed line's number
    created: Mapped[int] = mapped_column(BigInteger)
    merged: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime())


VALUE_TABLES: dict[str, type[ContactValue]] = {
    "emails": ContactEmail,
    "phones": ContactPhone,
    "names": ContactName,
    "locations": ContactLocation,
}
# Each collection's primary value is kept on the contact, in this column.
PRIMARY_COLUMN = {"emails": "email", "phones": "phone", "names": "name", "locations": "location"}

"""Storage of contacts and their emails, phones, names and locations."""

from datetime import datetime

from sqlalchemy import (
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from contactbase.db import Base, Id


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        # Target of the value tables' foreign keys: a value row and its contact share a Space.
        UniqueConstraint("space_id", "id"),
        Index("ix_contacts_space_id_created_at", "space_id", "created_at"),
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
    merged_into_id: Mapped[int | None] = mapped_column(Id, ForeignKey("contacts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    updated_at: Mapped[datetime] = mapped_column(DateTime())


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


VALUE_TABLES: dict[str, type[ContactValue]] = {
    "emails": ContactEmail,
    "phones": ContactPhone,
    "names": ContactName,
    "locations": ContactLocation,
}

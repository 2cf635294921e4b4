"""Contacts: creating with identity resolution (merging), reading and listing, per Space."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from contactbase.contacts.models import VALUE_TABLES, Contact, ContactEmail, ContactPhone
from contactbase.contacts.pagination import Cursor
from contactbase.contacts.schemas import ContactCreate, ContactDetail
from contactbase.contacts.values import normalise_email, normalise_phone, normalise_text
from contactbase.db import is_retryable, is_unique_violation
from contactbase.errors import Conflict, NotFound, ServiceUnavailable
from contactbase.spaces.service import utcnow

KINDS = ("emails", "phones", "names", "locations")
NORMALISE: dict[str, Callable[[str], str]] = {
    "emails": normalise_email,
    "phones": normalise_phone,
    "names": normalise_text,
    "locations": normalise_text,
}
PRIMARY_COLUMN = {"emails": "email", "phones": "phone", "names": "name", "locations": "location"}
# Attempts of one create before giving up: each lost race (a concurrent create of the same email,
# a concurrent merge of the same contacts, a deadlock) costs one.
MAX_ATTEMPTS = 10

# (value as stored, normalised form)
Value = tuple[str, str]


class _Raced(Exception):
    """A concurrent transaction changed the contacts being merged; start the attempt again."""


def dedupe(values: Sequence[str], normalise: Callable[[str], str]) -> list[Value]:
    """The values with repeats (by normal form) dropped, keeping the first."""
    seen: set[str] = set()
    kept: list[Value] = []
    for value in values:
        normalised = normalise(value)
        if normalised not in seen:
            seen.add(normalised)
            kept.append((value, normalised))
    return kept


async def create_contact(
    session: AsyncSession, space_id: int, payload: ContactCreate, *, merge: bool = True
) -> tuple[ContactDetail, bool]:
    """Create a contact, or merge the request into the contacts owning its emails.

    Returns the contact and whether it was created. The unique (Space, email) constraint
    decides races: a create that loses one is retried, and then merges.
    """
    incoming = {kind: dedupe(getattr(payload, kind), NORMALISE[kind]) for kind in KINDS}
    for _attempt in range(MAX_ATTEMPTS):
        try:
            async with session.begin_nested():
                return await _create_or_merge(session, space_id, incoming, merge)
        except _Raced:
            continue
        except DBAPIError as exc:
            if is_unique_violation(exc) or is_retryable(exc):
                continue
            raise
    raise ServiceUnavailable("These contacts are being changed by many requests at once; retry.")


async def _create_or_merge(
    session: AsyncSession, space_id: int, incoming: dict[str, list[Value]], merge: bool
) -> tuple[ContactDetail, bool]:
    owners = await _email_owners(session, space_id, incoming["emails"])
    if not owners:
        return await _insert_contact(session, space_id, incoming), True
    if not merge:
        existing = min(owners)
        raise Conflict(
            f"A contact with one of these emails already exists (id {existing}).", existing
        )
    return await _merge(session, space_id, sorted(owners), incoming), False


async def _email_owners(session: AsyncSession, space_id: int, emails: list[Value]) -> set[int]:
    rows = await session.scalars(
        select(ContactEmail.contact_id).where(
            ContactEmail.space_id == space_id,
            ContactEmail.normalised.in_([normalised for _, normalised in emails]),
        )
    )
    return set(rows)


def _primaries(values: dict[str, list[str]]) -> dict[str, str | None]:
    return {PRIMARY_COLUMN[kind]: (values[kind][0] if values[kind] else None) for kind in KINDS}


async def _insert_values(
    session: AsyncSession, space_id: int, contact_id: int, kind: str, rows: list[tuple[int, Value]]
) -> None:
    if not rows:
        return
    # Emails go in sorted order, so that two creates sharing emails lock them in the same order
    # and wait for each other instead of deadlocking.
    ordered = sorted(rows, key=lambda row: row[1][1]) if kind == "emails" else rows
    await session.execute(
        insert(VALUE_TABLES[kind]),
        [
            {
                "space_id": space_id,
                "contact_id": contact_id,
                "position": position,
                "value": value,
                "normalised": normalised,
            }
            for position, (value, normalised) in ordered
        ],
    )


async def _insert_contact(
    session: AsyncSession, space_id: int, incoming: dict[str, list[Value]]
) -> ContactDetail:
    now = utcnow()
    values = {kind: [value for value, _ in incoming[kind]] for kind in KINDS}
    contact_id = await session.scalar(
        insert(Contact)
        .values(space_id=space_id, created_at=now, updated_at=now, **_primaries(values))
        .returning(Contact.id)
    )
    assert contact_id is not None
    for kind in KINDS:
        await _insert_values(session, space_id, contact_id, kind, list(enumerate(incoming[kind])))
    return ContactDetail(id=contact_id, created_at=now, updated_at=now, **values)


@dataclass(frozen=True)
class _Stored:
    contact_id: int
    position: int
    value: str
    normalised: str


async def _stored_values(
    session: AsyncSession, space_id: int, contact_ids: Sequence[int]
) -> dict[str, list[_Stored]]:
    """Each collection's rows for these contacts, by contact id, then position."""
    stored: dict[str, list[_Stored]] = {}
    for kind, table in VALUE_TABLES.items():
        rows = await session.execute(
            select(table.contact_id, table.position, table.value, table.normalised)
            .where(table.space_id == space_id, table.contact_id.in_(contact_ids))
            .order_by(table.contact_id, table.position)
        )
        stored[kind] = [_Stored(*row) for row in rows]
    return stored


async def _merge(
    session: AsyncSession, space_id: int, ids: list[int], incoming: dict[str, list[Value]]
) -> ContactDetail:
    """Merge the request and the contacts `ids` into the oldest of them."""
    locked = (
        await session.execute(
            select(Contact.id, Contact.merged_into_id, Contact.created_at, Contact.updated_at)
            .where(Contact.space_id == space_id, Contact.id.in_(ids))
            .order_by(Contact.id)
            .with_for_update()
        )
    ).all()
    # Between the look-up and the lock another request may have merged these contacts, or
    # given one of the emails to a new contact: then resolve again.
    if len(locked) != len(ids) or any(row.merged_into_id is not None for row in locked):
        raise _Raced()
    if await _email_owners(session, space_id, incoming["emails"]) != set(ids):
        raise _Raced()

    survivor, losers = ids[0], ids[1:]
    stored = await _stored_values(session, space_id, ids)
    values: dict[str, list[str]] = {}
    additions: dict[str, list[tuple[int, Value]]] = {}
    for kind in KINDS:
        kept = [row for row in stored[kind] if row.contact_id == survivor]
        others = [(row.value, row.normalised) for row in stored[kind] if row.contact_id != survivor]
        seen = {row.normalised for row in kept}
        position = max((row.position for row in kept), default=-1) + 1
        additions[kind] = []
        for value, normalised in others + incoming[kind]:
            if normalised not in seen:
                seen.add(normalised)
                additions[kind].append((position, (value, normalised)))
                position += 1
        values[kind] = [row.value for row in kept] + [value for _, (value, _) in additions[kind]]

    updated_at = locked[0].updated_at
    if losers or any(additions.values()):
        updated_at = utcnow()
        if losers:
            await _retire(session, space_id, survivor, losers, updated_at)
        for kind in KINDS:
            await _insert_values(session, space_id, survivor, kind, additions[kind])
        await session.execute(
            update(Contact)
            .where(Contact.id == survivor)
            .values(updated_at=updated_at, **_primaries(values))
        )
    return ContactDetail(
        id=survivor, created_at=locked[0].created_at, updated_at=updated_at, **values
    )


async def _retire(
    session: AsyncSession, space_id: int, survivor: int, losers: list[int], now: datetime
) -> None:
    """Make `losers` aliases of `survivor`; their values have been copied to it."""
    for table in VALUE_TABLES.values():
        await session.execute(
            delete(table).where(table.space_id == space_id, table.contact_id.in_(losers))
        )
    # Aliases point straight at the survivor, so that resolving an id is one step.
    await session.execute(
        update(Contact)
        .where(Contact.space_id == space_id, Contact.merged_into_id.in_(losers))
        .values(merged_into_id=survivor)
    )
    await session.execute(
        update(Contact)
        .where(Contact.id.in_(losers))
        .values(merged_into_id=survivor, updated_at=now)
    )


async def get_contact(session: AsyncSession, space_id: int, contact_id: int) -> ContactDetail:
    """The contact with this id in the Space; an alias id gives the contact it was merged into."""
    row = await _contact_row(session, space_id, contact_id)
    if row is not None and row.merged_into_id is not None:
        row = await _contact_row(session, space_id, row.merged_into_id)
    if row is None:
        raise NotFound(f"No contact with id {contact_id}.")
    stored = await _stored_values(session, space_id, [row.id])
    return ContactDetail(
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        **{kind: [item.value for item in stored[kind]] for kind in KINDS},
    )


async def _contact_row(session: AsyncSession, space_id: int, contact_id: int) -> Any:
    return (
        await session.execute(
            select(
                Contact.id, Contact.merged_into_id, Contact.created_at, Contact.updated_at
            ).where(Contact.space_id == space_id, Contact.id == contact_id)
        )
    ).one_or_none()


@dataclass(frozen=True)
class ListFilters:
    start: datetime | None = None  # UTC, inclusive
    end: datetime | None = None  # UTC, exclusive
    email: str | None = None
    phone: str | None = None


def creation_window(
    start: str | None, end: str | None, timezone: str
) -> tuple[datetime | None, datetime | None]:
    """Inclusive local `YYYY-MM-DD HH:MM:SS` bounds as a UTC [start, end) window."""
    zone = ZoneInfo(timezone)

    def to_utc(text: str) -> datetime:
        local = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
        return local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)

    return (
        to_utc(start) if start else None,
        to_utc(end) + timedelta(seconds=1) if end else None,
    )


async def list_contacts(
    session: AsyncSession,
    space_id: int,
    filters: ListFilters,
    cursor: Cursor | None,
    per_page: int,
) -> tuple[list[Any], bool]:
    """A page of contacts, newest first, and whether more lie beyond it in its direction."""
    query = select(Contact.id, Contact.email, Contact.name, Contact.phone, Contact.location).where(
        Contact.space_id == space_id, Contact.merged_into_id.is_(None)
    )
    if filters.start is not None:
        query = query.where(Contact.created_at >= filters.start)
    if filters.end is not None:
        query = query.where(Contact.created_at < filters.end)
    if filters.email is not None:
        query = query.where(
            Contact.id.in_(
                select(ContactEmail.contact_id).where(
                    ContactEmail.space_id == space_id,
                    ContactEmail.normalised == normalise_email(filters.email),
                )
            )
        )
    if filters.phone is not None:
        query = query.where(
            Contact.id.in_(
                select(ContactPhone.contact_id).where(
                    ContactPhone.space_id == space_id,
                    ContactPhone.normalised == normalise_phone(filters.phone),
                )
            )
        )
    backwards = cursor is not None and not cursor.forward
    if cursor is not None:
        query = query.where(Contact.id > cursor.id if backwards else Contact.id < cursor.id)
    query = query.order_by(Contact.id.asc() if backwards else Contact.id.desc())
    rows = list((await session.execute(query.limit(per_page + 1))).all())
    has_more = len(rows) > per_page
    rows = rows[:per_page]
    if backwards:
        rows.reverse()
    return rows, has_more


async def all_emails(
    session: AsyncSession, space_id: int, contact_ids: Sequence[int]
) -> dict[int, list[str]]:
    """Every email of each of these contacts, primary first."""
    emails: dict[int, list[str]] = {contact_id: [] for contact_id in contact_ids}
    rows = await session.execute(
        select(ContactEmail.contact_id, ContactEmail.value)
        .where(ContactEmail.space_id == space_id, ContactEmail.contact_id.in_(contact_ids))
        .order_by(ContactEmail.contact_id, ContactEmail.position)
    )
    for contact_id, value in rows:
        emails[contact_id].append(value)
    return emails

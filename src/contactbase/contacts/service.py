"""Writing contacts: create with identity resolution (merging), and sparse update."""

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from contactbase.contacts.custom_fields import SLOTS, sent_slots, to_wire
from contactbase.contacts.fast_create import insert_if_new
from contactbase.contacts.models import PRIMARY_COLUMN, VALUE_TABLES, Contact, ContactEmail
from contactbase.contacts.reads import (
    CONTACT_ROW,
    contact_detail,
    contact_row,
    resolve,
    slots_of,
    stored_values,
)
from contactbase.contacts.schemas import ContactCreate, ContactDetail, ContactUpdate, ContactUpdated
from contactbase.contacts.values import normalise_email, normalise_phone, normalise_text
from contactbase.db import Connection, is_retryable, is_unique_violation
from contactbase.errors import Conflict, InvalidInput, ServiceUnavailable
from contactbase.spaces.service import utcnow
from contactbase.validation import show

T = TypeVar("T")
KINDS = tuple(VALUE_TABLES)
NORMALISE: dict[str, Callable[[str], str]] = {
    "emails": normalise_email,
    "phones": normalise_phone,
    "names": normalise_text,
    "locations": normalise_text,
}
# Attempts of one write before giving up: each lost race (a concurrent create of the same email,
# a concurrent merge of the same contacts, a deadlock) costs one.
MAX_ATTEMPTS = 10

# (value as stored, normalised form)
Value = tuple[str, str]


class _Raced(Exception):
    """A concurrent transaction changed the contacts being written; start the attempt again."""


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


async def _attempt(session: AsyncSession, write: Callable[[], Awaitable[T]]) -> T:
    """Run `write` in a savepoint, again from the start whenever it loses a race."""
    for _attempt_number in range(MAX_ATTEMPTS):
        try:
            async with session.begin_nested():
                return await write()
        except _Raced:
            continue
        except DBAPIError as exc:
            if is_unique_violation(exc) or is_retryable(exc):
                continue
            raise
    raise ServiceUnavailable("This contact is being changed by many requests at once; retry.")


async def create_contact(
    session: AsyncSession, space_id: int, payload: ContactCreate, *, merge: bool = True
) -> tuple[ContactDetail, bool]:
    """Create a contact, or merge the request into the contacts owning its emails.

    Returns the contact and whether it was created. The unique (Space, email) constraint
    decides races: a create that loses one is retried, and then merges.
    """
    incoming = _incoming(payload)
    slots = sent_slots(payload.custom_fields)

    async def write() -> tuple[ContactDetail, bool]:
        owners = await _email_owners(session, space_id, incoming["emails"])
        if not owners:
            return await _insert_contact(session, space_id, incoming, slots), True
        if not merge:
            existing = min(owners.values())
            raise Conflict(
                f"A contact with one of these emails already exists (id {existing}).", existing
            )
        return await _merge(session, space_id, sorted(set(owners.values())), incoming, slots), False

    return await _attempt(session, write)


def _incoming(payload: ContactCreate) -> dict[str, list[Value]]:
    return {kind: dedupe(getattr(payload, kind), NORMALISE[kind]) for kind in KINDS}


async def create_if_new(
    connection: Connection, space_id: int, payload: ContactCreate
) -> ContactDetail | None:
    """On PostgreSQL, the new contact written in one statement; None when an email is known
    (nothing is written: create_contact then merges) and always on SQLite."""
    if isinstance(connection, AsyncSession):
        return None
    return await insert_if_new(
        connection, space_id, _incoming(payload), sent_slots(payload.custom_fields)
    )


async def _email_owners(
    session: AsyncSession, space_id: int, emails: list[Value]
) -> dict[str, int]:
    """Which contact owns each of these emails (by normal form), for those that are known."""
    rows = await (await session.connection()).execute(
        select(ContactEmail.normalised, ContactEmail.contact_id).where(
            ContactEmail.space_id == space_id,
            ContactEmail.normalised.in_([normalised for _, normalised in emails]),
        )
    )
    return {normalised: contact_id for normalised, contact_id in rows}


def _primaries(values: dict[str, list[str]]) -> dict[str, str | None]:
    return {PRIMARY_COLUMN[kind]: (values[kind][0] if values[kind] else None) for kind in values}


async def _insert_values(
    session: AsyncSession, space_id: int, contact_id: int, kind: str, rows: list[tuple[int, Value]]
) -> None:
    if not rows:
        return
    # Emails go in sorted order, so that two creates sharing emails lock them in the same order
    # and wait for each other instead of deadlocking.
    ordered = sorted(rows, key=lambda row: row[1][1]) if kind == "emails" else rows
    await (await session.connection()).execute(
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
    session: AsyncSession, space_id: int, incoming: dict[str, list[Value]], slots: dict[str, Any]
) -> ContactDetail:
    now = utcnow()
    values = {kind: [value for value, _ in incoming[kind]] for kind in KINDS}
    contact_id = await (await session.connection()).scalar(
        insert(Contact)
        .values(space_id=space_id, created_at=now, updated_at=now, **_primaries(values), **slots)
        .returning(Contact.id)
    )
    assert contact_id is not None
    for kind in KINDS:
        await _insert_values(session, space_id, contact_id, kind, list(enumerate(incoming[kind])))
    return contact_detail(contact_id, values, slots, now, now)


async def _merge(
    session: AsyncSession,
    space_id: int,
    ids: list[int],
    incoming: dict[str, list[Value]],
    sent: dict[str, Any],
) -> ContactDetail:
    """Merge the request and the contacts `ids` into the oldest of them."""
    locked = (
        await (await session.connection()).execute(
            select(*CONTACT_ROW)
            .where(Contact.space_id == space_id, Contact.id.in_(ids))
            .order_by(Contact.id)
            .with_for_update()
        )
    ).all()
    # Between the look-up and the lock another request may have merged these contacts, or
    # given one of the emails to another contact: then resolve again.
    if len(locked) != len(ids) or any(row.merged_into_id is not None for row in locked):
        raise _Raced()
    if set((await _email_owners(session, space_id, incoming["emails"])).values()) != set(ids):
        raise _Raced()

    survivor, losers = ids[0], ids[1:]
    stored = await stored_values(session, space_id, ids)
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

    # The survivor's slots win; its empty ones are filled from the others, by id; then the
    # request's slots overwrite.
    before = slots_of(locked[0])
    slots = dict(before)
    for row in locked[1:]:
        for slot, value in slots_of(row).items():
            if slots[slot] is None:
                slots[slot] = value
    slots.update(sent)
    changed_slots = {slot: slots[slot] for slot in SLOTS if slots[slot] != before[slot]}

    updated_at = locked[0].updated_at
    if losers or changed_slots or any(additions.values()):
        updated_at = utcnow()
        if losers:
            await _retire(session, space_id, survivor, losers, updated_at)
        for kind in KINDS:
            await _insert_values(session, space_id, survivor, kind, additions[kind])
        await (await session.connection()).execute(
            update(Contact)
            .where(Contact.space_id == space_id, Contact.id == survivor)
            .values(updated_at=updated_at, **_primaries(values), **changed_slots)
        )
    return contact_detail(survivor, values, slots, locked[0].created_at, updated_at)


async def _retire(
    session: AsyncSession, space_id: int, survivor: int, losers: list[int], now: datetime
) -> None:
    """Make `losers` aliases of `survivor`; their values have been copied to it."""
    for table in VALUE_TABLES.values():
        await (await session.connection()).execute(
            delete(table).where(table.space_id == space_id, table.contact_id.in_(losers))
        )
    # Aliases point straight at the survivor, so that resolving an id is one step.
    await (await session.connection()).execute(
        update(Contact)
        .where(Contact.space_id == space_id, Contact.merged_into_id.in_(losers))
        .values(merged_into_id=survivor)
    )
    await (await session.connection()).execute(
        update(Contact)
        .where(Contact.space_id == space_id, Contact.id.in_(losers))
        .values(merged_into_id=survivor, updated_at=now)
    )


async def update_contact(
    session: AsyncSession, space_id: int, contact_id: int, payload: ContactUpdate
) -> ContactUpdated:
    """Replace each collection sent (and all slots, when custom_fields is sent) in one go."""
    sent = payload.model_fields_set
    incoming = {
        kind: dedupe(getattr(payload, kind), NORMALISE[kind]) for kind in KINDS if kind in sent
    }
    slots = None
    if "custom_fields" in sent:
        slots = dict.fromkeys(SLOTS) | sent_slots(payload.custom_fields)

    async def write() -> ContactUpdated:
        target = (await resolve(session, space_id, contact_id)).id
        row = await contact_row(session, space_id, target, lock=True)
        if row is None or row.merged_into_id is not None:
            raise _Raced()  # merged into another contact since: update that one
        if "emails" in incoming:
            await _refuse_emails_of_others(session, space_id, target, payload.emails)
        for kind, rows in incoming.items():
            table = VALUE_TABLES[kind]
            await (await session.connection()).execute(
                delete(table).where(table.space_id == space_id, table.contact_id == target)
            )
            await _insert_values(session, space_id, target, kind, list(enumerate(rows)))
        values = {kind: [value for value, _ in rows] for kind, rows in incoming.items()}
        await (await session.connection()).execute(
            update(Contact)
            .where(Contact.space_id == space_id, Contact.id == target)
            .values(updated_at=utcnow(), **_primaries(values), **(slots or {}))
        )
        shown: dict[str, Any] = dict(values)
        if slots is not None:
            shown["custom_fields"] = to_wire(slots)
        return ContactUpdated(id=target, **shown)

    return await _attempt(session, write)


async def _refuse_emails_of_others(
    session: AsyncSession, space_id: int, contact_id: int, emails: list[str]
) -> None:
    """422 when any of `emails` belongs to another contact of the Space."""
    owners = await _email_owners(session, space_id, dedupe(emails, normalise_email))
    errors: dict[str, list[str]] = {}
    others: list[int] = []
    for index, email in enumerate(emails):
        owner = owners.get(normalise_email(email))
        if owner is not None and owner != contact_id:
            errors.setdefault(f"emails.{index}", []).append(
                f"The emails.{index} field ({show(email)}) already belongs to contact {owner}."
            )
            others.append(owner)
    if errors:
        raise InvalidInput(errors, existing_contact_id=min(others))

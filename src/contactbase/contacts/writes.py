"""Writing contacts: the one home of every write of a contact, each use case one entry point.

`create_contact` creates a contact, or merges the request into the contacts that own its
emails (identity resolution). The backend is chosen here and nowhere else:
- On PostgreSQL a new person is written by one statement of data-modifying CTEs (NEW_CONTACT),
  run on the request's connection as its own transaction. It inserts nothing when an email is
  known; when a concurrent create takes one of the emails first, the unique index fails the
  whole statement (after waiting for that create to commit), so nothing of it is written
  either way, and the request goes on to the merge below.
- A request that brings nothing new to the one contact owning its emails is answered from one
  read of that contact (`_unchanged`), without a transaction.
- Otherwise (SQLite, and every merge or update) the write runs in one write transaction
  (`Lease.write`: on PostgreSQL on the request's own connection, on SQLite on the single
  writer, committed together with the writes queued beside it), begun again whenever it
  loses a race: the unique (Space, normalised email) index decides, and a create that
  loses merges on its next attempt. Its statements are prebuilt (statements.py).

The entry points own their transactions, because the shape of the transaction (none for the
one-statement insert, one for a merge) is part of the backend's choice; batch, erasure and the
change feed extend this module.
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from contactbase.contacts.custom_fields import SLOTS, sent_slots, to_wire
from contactbase.contacts.models import PRIMARY_COLUMN, VALUE_TABLES
from contactbase.contacts.reads import contact_row, resolve, stored_values, whole_contact
from contactbase.contacts.schemas import ContactCreate, ContactDetail, ContactUpdate, ContactUpdated
from contactbase.contacts.statements import (
    DELETE_VALUES,
    DELETE_VALUES_OF,
    INSERT_CONTACT,
    INSERT_VALUES,
    LOCK_CONTACTS,
    NEW_CONTACT,
    OWNERS,
    REPOINT_ALIASES,
    RETIRE,
    UPDATE_CONTACT,
)
from contactbase.contacts.values import normalise_email, normalise_phone, normalise_text
from contactbase.db import (
    DRIVER_ERRORS,
    Lease,
    is_retryable,
    is_unique_violation,
    utcnow,
)
from contactbase.errors import Conflict, InvalidInput, ServiceUnavailable
from contactbase.prepared import Connection
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


@dataclass(frozen=True)
class Incoming:
    """What a create brings, computed once for whichever path writes it: each collection's
    values without repeats, and the custom-field slots sent."""

    values: dict[str, list[Value]]
    slots: dict[str, Any]

    @classmethod
    def of(cls, payload: ContactCreate) -> "Incoming":
        return cls(
            {kind: dedupe(getattr(payload, kind), NORMALISE[kind]) for kind in KINDS},
            sent_slots(payload.custom_fields),
        )

    def shown(self) -> dict[str, list[str]]:
        return {kind: [value for value, _ in rows] for kind, rows in self.values.items()}


async def create_contact(
    lease: Lease, space_id: int, payload: ContactCreate, *, merge: bool = True
) -> tuple[ContactDetail, bool]:
    """Create a contact, or merge the request into the contacts owning its emails (with
    `merge=False`, refuse with 409 instead). Returns the contact and whether it was created.

    `lease` is the request's connection. On it: on PostgreSQL the one-statement insert, which
    also names the emails' owners when it inserts nothing; on SQLite the owners' look-up. A
    request that brings nothing its one owner lacks is answered from there, unlocked and
    unwritten (`_unchanged`); any other is resolved again in a write transaction."""
    incoming = Incoming.of(payload)
    if lease.db.is_sqlite:
        owners = await _owner_ids(await lease.connect(), space_id, incoming.values["emails"])
    else:
        created, owners = await _insert_if_new(lease, space_id, incoming)
        if created is not None:
            return created, True
    if owners and not merge:
        raise _conflict(owners)
    if len(owners) == 1:
        unchanged = await _unchanged(lease, space_id, owners[0], incoming)
        if unchanged is not None:
            return unchanged, False
    return await _on_writer(lease, space_id, incoming, merge)


async def resolve_on_writer(
    lease: Lease, space_id: int, payload: ContactCreate, *, merge: bool = True
) -> tuple[ContactDetail, bool]:
    """The reference path of a create: resolve and write it in a write transaction, without
    the shortcuts of `create_contact` (tests hold those to it)."""
    return await _on_writer(lease, space_id, Incoming.of(payload), merge)


async def _on_writer(
    lease: Lease, space_id: int, incoming: Incoming, merge: bool
) -> tuple[ContactDetail, bool]:
    return await _attempts(
        lease, lambda connection: _resolve(connection, space_id, incoming, merge)
    )


async def _resolve(
    connection: Connection, space_id: int, incoming: Incoming, merge: bool
) -> tuple[ContactDetail, bool]:
    """In a write transaction: create the contact, or merge it into the owners of its
    emails (whoever they are by now)."""
    owners = await _owner_ids(connection, space_id, incoming.values["emails"])
    if not owners:
        return await _insert_contact(connection, space_id, incoming), True
    if not merge:
        raise _conflict(owners)
    return await _merge(connection, space_id, owners, incoming), False


def _conflict(owners: list[int]) -> Conflict:
    existing = min(owners)
    return Conflict(f"A contact with one of these emails already exists (id {existing}).", existing)


async def _unchanged(
    lease: Lease, space_id: int, owner: int, incoming: Incoming
) -> ContactDetail | None:
    """The owner as it stands, when the request brings nothing it lacks: every value is held
    already (by normal form) and every slot sent has the value sent. Then a merge would write
    nothing, and none is made. None otherwise, or when the owner was merged away since its
    look-up: then the writer resolves it. The contact is read whole, in one snapshot
    (reads.whole_contact), so the answer is a state it was in."""
    found = await whole_contact(await lease.connect(), space_id, owner)
    if found is None or found[0].id != owner:  # merged away since
        return None
    row, stored = found
    if any(row.slots[slot] != value for slot, value in incoming.slots.items()):
        return None
    held: dict[str, set[str]] = {kind: set() for kind in KINDS}
    shown: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for value in stored:
        held[value.kind].add(value.normalised)
        shown[value.kind].append(value.value)
    for kind, rows in incoming.values.items():
        if any(normalised not in held[kind] for _, normalised in rows):
            return None
    return ContactDetail.of(row.id, shown, row.slots, row.created_at, row.updated_at)


async def update_contact(
    lease: Lease, space_id: int, contact_id: int, payload: ContactUpdate
) -> ContactUpdated:
    """Replace each collection sent (and all slots, when custom_fields is sent) in one go."""
    sent = payload.model_fields_set
    incoming = {
        kind: dedupe(getattr(payload, kind), NORMALISE[kind]) for kind in KINDS if kind in sent
    }
    slots = None
    if "custom_fields" in sent:
        slots = dict.fromkeys(SLOTS) | sent_slots(payload.custom_fields)

    async def write(connection: Connection) -> ContactUpdated:
        target = (await resolve(connection, space_id, contact_id)).id
        row = await contact_row(connection, space_id, target, lock=True)
        if row is None or row.merged_into_id is not None:
            raise _Raced()  # merged into another contact since: update that one
        if "emails" in incoming:
            await _refuse_emails_of_others(connection, space_id, target, payload.emails)
        for kind, rows in incoming.items():
            params = {"space_id": space_id, "contact_id": target}
            await DELETE_VALUES[kind].run(connection, params)
            await _insert_values(connection, space_id, target, kind, list(enumerate(rows)))
        values = {kind: [value for value, _ in rows] for kind, rows in incoming.items()}
        primaries = row.primaries | _primaries(values)
        await _write_contact(connection, space_id, target, primaries, slots or row.slots, utcnow())
        shown: dict[str, Any] = dict(values)
        if slots is not None:
            shown["custom_fields"] = to_wire(slots)
        return ContactUpdated(id=target, **shown)

    return await _attempts(lease, write)


async def _attempts(lease: Lease, write: Callable[[Connection], Awaitable[T]]) -> T:
    """Run `write` in a write transaction, in a new one whenever it loses a race (a unique
    index taken first, a deadlock, contacts changed between their look-up and their lock)."""
    for _attempt_number in range(MAX_ATTEMPTS):
        try:
            return await lease.write(write)
        except _Raced:
            continue
        except DRIVER_ERRORS as exc:
            if is_unique_violation(exc) or is_retryable(exc):
                continue
            raise
    raise ServiceUnavailable("This contact is being changed by many requests at once; retry.")


async def _insert_if_new(
    lease: Lease, space_id: int, incoming: Incoming
) -> tuple[ContactDetail | None, list[int]]:
    """PostgreSQL: the new contact, written by NEW_CONTACT; when an email is known, nothing is
    written and the owners of the known emails come back instead. A concurrent create that
    takes an email while the statement runs leaves neither: (None, [])."""
    now = utcnow()
    values = incoming.shown()
    params: dict[str, Any] = {"space_id": space_id, "now": now, **dict.fromkeys(SLOTS)}
    params |= incoming.slots | _primaries(values)
    for kind, rows in incoming.values.items():
        params[f"{kind}_positions"] = list(range(len(rows)))
        params[f"{kind}_values"] = values[kind]
        params[f"{kind}_normalised"] = [normalised for _, normalised in rows]
    try:
        row = await NEW_CONTACT.row(await lease.connect(), params)
    except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
        return None, []  # a concurrent write took an email first: resolve on the writer
    assert row is not None
    if row.created is None:
        return None, sorted(set(row.owners or ()))
    return ContactDetail.of(row.created, values, incoming.slots, now, now), []


async def _email_owners(
    connection: Connection, space_id: int, emails: list[Value]
) -> dict[str, int]:
    """Which contact owns each of these emails (by normal form), for those that are known."""
    sent = [normalised for _, normalised in emails]
    rows = await OWNERS.rows(connection, {"space_id": space_id, "emails": sent})
    return {row.normalised: row.contact_id for row in rows if row.contact_id is not None}


async def _owner_ids(connection: Connection, space_id: int, emails: list[Value]) -> list[int]:
    """The contacts that own any of these emails, by id."""
    return sorted(set((await _email_owners(connection, space_id, emails)).values()))


def _primaries(values: dict[str, list[str]]) -> dict[str, str | None]:
    return {PRIMARY_COLUMN[kind]: (values[kind][0] if values[kind] else None) for kind in values}


def _contact_params(primaries: dict[str, str | None], slots: dict[str, Any]) -> dict[str, Any]:
    """The `set_…` parameters of INSERT_CONTACT and UPDATE_CONTACT."""
    return {f"set_{column}": primaries.get(column) for column in PRIMARY_COLUMN.values()} | {
        f"set_{slot}": slots.get(slot) for slot in SLOTS
    }


async def _write_contact(
    connection: Connection,
    space_id: int,
    contact_id: int,
    primaries: dict[str, str | None],
    slots: dict[str, Any],
    now: datetime,
) -> None:
    params = {"space": space_id, "contact_id": contact_id, "now": now}
    await UPDATE_CONTACT.run(connection, params | _contact_params(primaries, slots))


async def _insert_values(
    connection: Connection, space_id: int, contact_id: int, kind: str, rows: list[tuple[int, Value]]
) -> None:
    if not rows:
        return
    # Emails go in sorted order, as in NEW_CONTACT: concurrent writes lock them in one order.
    ordered = sorted(rows, key=lambda row: row[1][1]) if kind == "emails" else rows
    params = {
        "space_id": space_id,
        "contact_id": contact_id,
        "positions": [position for position, _ in ordered],
        "values": [value for _, (value, _) in ordered],
        "normalised": [normalised for _, (_, normalised) in ordered],
    }
    await INSERT_VALUES[kind].run(connection, params)


async def _insert_contact(
    connection: Connection, space_id: int, incoming: Incoming
) -> ContactDetail:
    now = utcnow()
    values = incoming.shown()
    params = {"space": space_id, "now": now}
    params |= _contact_params(_primaries(values), incoming.slots)
    row = await INSERT_CONTACT.row(connection, params)
    assert row is not None
    for kind in KINDS:
        await _insert_values(
            connection, space_id, row.id, kind, list(enumerate(incoming.values[kind]))
        )
    return ContactDetail.of(row.id, values, incoming.slots, now, now)


async def _merge(
    connection: Connection, space_id: int, ids: list[int], incoming: Incoming
) -> ContactDetail:
    """Merge the request and the contacts `ids` into the oldest of them."""
    locked = await LOCK_CONTACTS.rows(connection, {"space_id": space_id, "ids": ids})
    # Between the look-up and the lock another request may have merged these contacts, or
    # given one of the emails to another contact: then resolve again.
    if len(locked) != len(ids) or any(row.merged_into_id is not None for row in locked):
        raise _Raced()
    if await _owner_ids(connection, space_id, incoming.values["emails"]) != ids:
        raise _Raced()

    survivor, losers = ids[0], ids[1:]
    stored = await stored_values(connection, space_id, ids)
    values: dict[str, list[str]] = {}
    additions: dict[str, list[tuple[int, Value]]] = {}
    for kind in KINDS:
        kept = [row for row in stored[kind] if row.contact_id == survivor]
        others = [(row.value, row.normalised) for row in stored[kind] if row.contact_id != survivor]
        seen = {row.normalised for row in kept}
        position = max((row.position for row in kept), default=-1) + 1
        additions[kind] = []
        for value, normalised in others + incoming.values[kind]:
            if normalised not in seen:
                seen.add(normalised)
                additions[kind].append((position, (value, normalised)))
                position += 1
        values[kind] = [row.value for row in kept] + [value for _, (value, _) in additions[kind]]

    # The survivor's slots win; its empty ones are filled from the others, by id; then the
    # request's slots overwrite.
    before = locked[0].slots
    slots = dict(before)
    for row in locked[1:]:
        for slot, value in row.slots.items():
            if slots[slot] is None:
                slots[slot] = value
    slots.update(incoming.slots)
    changed = slots != before

    updated_at = locked[0].updated_at
    if losers or changed or any(additions.values()):
        updated_at = utcnow()
        if losers:
            await _retire(connection, space_id, survivor, losers, updated_at)
        for kind in KINDS:
            await _insert_values(connection, space_id, survivor, kind, additions[kind])
        await _write_contact(connection, space_id, survivor, _primaries(values), slots, updated_at)
    return ContactDetail.of(survivor, values, slots, locked[0].created_at, updated_at)


async def _retire(
    connection: Connection, space_id: int, survivor: int, losers: list[int], now: datetime
) -> None:
    """Make `losers` aliases of `survivor`; their values have been copied to it."""
    for kind in KINDS:
        await DELETE_VALUES_OF[kind].run(connection, {"space_id": space_id, "ids": losers})
    # Aliases point straight at the survivor, so that resolving an id is one step.
    params = {"space": space_id, "ids": losers, "survivor": survivor}
    await REPOINT_ALIASES.run(connection, params)
    await RETIRE.run(connection, params | {"now": now})


async def _refuse_emails_of_others(
    connection: Connection, space_id: int, contact_id: int, emails: list[str]
) -> None:
    """422 when any of `emails` belongs to another contact of the Space."""
    owners = await _email_owners(connection, space_id, dedupe(emails, normalise_email))
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

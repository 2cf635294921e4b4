"""Writing contacts: the one home of every write of a contact, each use case one entry point.

Every create, single or in a batch, is resolved by one plan (merging.py) and written by
`_store`, in one write transaction (`Lease.write`: on PostgreSQL on the request's own
connection, on SQLite on the single writer, committed together with the writes queued beside
it). `_store` looks up the contacts that own the items' emails, locks them, reads their values,
plans the batch in memory and writes it with a few statements of many rows each (statements.py:
`unnest` of arrays on PostgreSQL, one statement stepped per row on SQLite). A transaction that
loses a race (an email taken first by a concurrent write: the unique (Space, normalised email)
index refuses it; a deadlock; contacts merged between their look-up and their lock) is begun
again, up to MAX_ATTEMPTS; the next attempt sees the winner and merges into it.

The plan also refuses an item that would grow a contact past merging.MAX_VALUES in a
collection (422, the item's outcome like a 409's: nothing of it is written). It counts the
values of contacts read under their lock, so concurrent merges cannot pass the cap together.

Two shortcuts of a single create skip the transaction, each held to `_store` by tests
(tests/test_write_paths.py); neither can pass the cap, so neither checks it:
- On PostgreSQL a new person is written by one statement of data-modifying CTEs (NEW_CONTACT),
  as its own transaction. It inserts nothing when an email is known (and names the owners);
  when a concurrent create takes one of the emails first, the unique index fails the whole
  statement, so nothing of it is written either way, and the request goes on to `_store`.
  It creates only new contacts, whose collections hold at most schemas.MAX_ITEMS values.
- A request that brings nothing new to the one contact owning its emails is answered from one
  read of that contact (`_unchanged`), without a transaction. It adds no value.

`then`, given to the batch's entry point, runs in the same transaction after the writes: what
must be committed with them or not at all (an idempotent answer, an import's progress).
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from contactbase.contacts import changes
from contactbase.contacts.custom_fields import SLOTS, sent_slots
from contactbase.contacts.merging import (
    KINDS,
    Incoming,
    Person,
    Plan,
    Refused,
    Snapshot,
    Value,
    plan,
    stored_person,
)
from contactbase.contacts.models import PRIMARY_COLUMN
from contactbase.contacts.reads import (
    WholeRow,
    stored_values,
    whole_contact,
)
from contactbase.contacts.schemas import ContactCreate, ContactDetail
from contactbase.contacts.statements import (
    DELETE_VALUES_OF,
    INSERT_VALUES,
    LAST_ID,
    LOCK_CONTACTS,
    NEW_CONTACT,
    NEXT_IDS,
    OWNERS,
    PRIMARIES,
    REPOINT_ALIASES,
    RETIRE,
    insert_contacts,
    update_contacts,
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
from contactbase.sqlite import SqliteConnection

T = TypeVar("T")
NORMALISE: dict[str, Callable[[str], str]] = {
    "emails": normalise_email,
    "phones": normalise_phone,
    "names": normalise_text,
    "locations": normalise_text,
}
# Attempts of one write before giving up: each lost race (a concurrent create of the same email,
# a concurrent merge of the same contacts, a deadlock) costs one.
MAX_ATTEMPTS = 10
# Work committed with a batch's writes (or with none), given the connection and the outcomes.
Then = Callable[[Connection, list["Outcome"]], Awaitable[None]]


class Raced(Exception):
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


def incoming(payload: ContactCreate) -> Incoming:
    """What a create brings, computed once: each collection without repeats, the slots sent."""
    return Incoming(
        {kind: dedupe(getattr(payload, kind), NORMALISE[kind]) for kind in KINDS},
        sent_slots(payload.custom_fields),
    )


def shown(item: Incoming) -> dict[str, list[str]]:
    return {kind: [value for value, _ in rows] for kind, rows in item.values.items()}


@dataclass(frozen=True)
class Outcome:
    """One item's answer: 201 created or 200 merged with the contact as it stood after the
    item (none when the batch was not written), or refused (`refusal`, its status): 409, its
    emails known under on_conflict=error, or 422, a collection that would pass MAX_VALUES."""

    status: int
    snapshot: Snapshot | None = None
    refusal: Conflict | InvalidInput | None = None
    refused_by: int | None = None  # the contact that refused it, which the refusal names

    @property
    def contact(self) -> ContactDetail | None:
        return None if self.snapshot is None else self.snapshot.detail()

    def named(self) -> list[int]:
        """The contact the answer names: the one written, or the one that refused it."""
        if self.refusal is not None:
            return [] if self.refused_by is None else [self.refused_by]
        return [] if self.snapshot is None else [self.snapshot.person.id]

    def wire(self) -> dict[str, Any] | None:
        """The contact as the API shows it, built without a model (a batch has a thousand)."""
        return None if self.snapshot is None else self.snapshot.wire()


async def upsert_batch(
    lease: Lease,
    space_id: int,
    items: Sequence[Incoming],
    *,
    merge: bool = True,
    write: bool = True,
    atomic: bool = False,
    then: Then | None = None,
) -> list[Outcome]:
    """Create or merge `items` in order, in one transaction; each item's outcome in order.
    Nothing is written with `write=False`, nor with `atomic` when an item is refused: the
    outcomes are then what they would have been, without their contacts. `then` runs in the
    transaction last, given the outcomes."""

    async def work(connection: Connection) -> list[Outcome]:
        return await _store(
            connection, space_id, items, merge=merge, write=write, atomic=atomic, then=then
        )

    return await attempts(lease, work)


async def create_contact(
    lease: Lease, space_id: int, payload: ContactCreate, *, merge: bool = True
) -> tuple[ContactDetail, bool]:
    """Create a contact, or merge the request into the contacts owning its emails (with
    `merge=False`, refuse with 409 instead; 422 when it would grow a collection past
    MAX_VALUES). Returns the contact and whether it was created.

    On the request's connection first: on PostgreSQL the one-statement insert, which also
    names the emails' owners when it inserts nothing; on SQLite the owners' look-up. A request
    that brings nothing its one owner lacks is answered from there, unlocked and unwritten
    (`_unchanged`); any other is resolved again by `_store`, told the owners found."""
    item = incoming(payload)
    found: WholeRow | None = None
    if lease.db.is_sqlite:
        owners = await owner_ids(await lease.connect(), space_id, item.emails())
    else:
        created, owners, found = await _insert_if_new(lease, space_id, item)
        if created is not None:
            return created, True
    if owners and not merge:
        raise _conflict(min(owners))
    if len(owners) == 1:
        if found is None:  # SQLite: read now, in the snapshot of the owners' look-up
            found = await whole_contact(await lease.connect(), space_id, owners[0])
        unchanged = _unchanged(found, owners[0], item)
        if unchanged is not None:
            return unchanged, False

    known: list[int] | None = owners

    async def work(connection: Connection) -> list[Outcome]:
        nonlocal known
        hint, known = known, None  # a lost race looks the owners up afresh
        return await _store(connection, space_id, [item], merge=merge, known=hint)

    return _single((await attempts(lease, work))[0])


async def resolve_on_writer(
    lease: Lease, space_id: int, payload: ContactCreate, *, merge: bool = True
) -> tuple[ContactDetail, bool]:
    """The reference path of a create: `_store` alone, without the shortcuts of
    `create_contact` (tests hold those to it)."""
    return _single((await upsert_batch(lease, space_id, [incoming(payload)], merge=merge))[0])


def _single(outcome: Outcome) -> tuple[ContactDetail, bool]:
    if outcome.refusal is not None:
        raise outcome.refusal
    contact = outcome.contact
    assert contact is not None
    return contact, outcome.status == 201


def _conflict(existing: int) -> Conflict:
    return Conflict(f"A contact with one of these emails already exists (id {existing}).", existing)


async def _store(
    connection: Connection,
    space_id: int,
    items: Sequence[Incoming],
    *,
    merge: bool,
    write: bool = True,
    atomic: bool = False,
    known: list[int] | None = None,
    then: Then | None = None,
) -> list[Outcome]:
    """In a write transaction: lock the contacts owning the items' emails (`known`, when the
    caller has just looked them up), plan the items against them, and write the plan.

    Whose emails are whose is read again after the lock, from the locked contacts' values: an
    email of the items that none of them holds is taken as new, and if another contact took it
    meanwhile, the unique index refuses the insert and the attempt starts again."""
    if known is None:
        emails = sorted({email for item in items for email in item.emails()})
        known = await owner_ids(connection, space_id, emails)
    stored = []
    if known:
        rows = await LOCK_CONTACTS.rows(connection, {"space_id": space_id, "ids": known})
        if len(rows) != len(known) or any(row.merged_into_id is not None for row in rows):
            raise Raced()  # merged since the look-up
        values = await stored_values(connection, space_id, known)
        by_contact: dict[int, list[Any]] = {row.id: [] for row in rows}
        for kind in KINDS:
            for value in values[kind]:
                by_contact[value.contact_id].append(value)
        stored = [stored_person(row, by_contact[row.id]) for row in rows]
    result = plan(items, stored, merge=merge, now=utcnow())
    if atomic and any(isinstance(one, Refused) for one in result.outcomes):
        write = False
    if write:
        await _write(connection, space_id, result)
    outcomes = [_outcome(one, written=write) for one in result.outcomes]
    if then is not None:
        await then(connection, outcomes)
    return outcomes


def _outcome(one: Any, *, written: bool) -> Outcome:
    if isinstance(one, Refused):
        refusal = one.error()
        return Outcome(refusal.status, refusal=refusal, refused_by=one.owner.id)
    created, snapshot = one
    return Outcome(201 if created else 200, snapshot if written else None)


async def _write(connection: Connection, space_id: int, result: Plan) -> None:
    """The plan's rows: merged contacts' values out, new contacts in, aliases re-pointed,
    survivors' rows updated, values in, and the change feed's events. Emails go in sorted by
    normal form (byte order, as NEW_CONTACT orders them): concurrent writes take the unique
    index in one order and wait for each other instead of deadlocking."""
    fixed = {"space": space_id, "now": result.now}
    losers = list(result.losers())
    if losers:
        ids = [person.id for person in losers]
        for kind in KINDS:
            await DELETE_VALUES_OF[kind].run(connection, {"space_id": space_id, "ids": ids})
    if result.created:
        result.assign_ids(await _new_ids(connection, len(result.created)))
        slots = _slots_set(result.created)
        rows = [
            (
                person.id,
                _merged_into(person),
                *contact_fields(person.primaries(), person.slots, slots),
            )
            for person in result.created
        ]
        await insert_contacts(slots).run(connection, fixed, rows)
    if losers:
        pairs = [(person.id, person.live().id) for person in losers]
        await REPOINT_ALIASES.run(connection, fixed, pairs)
        await RETIRE.run(connection, fixed, pairs)
    survivors = list(result.changed_survivors())
    if survivors:
        slots = _slots_set(survivors)  # a merge never empties a slot
        rows = [
            (person.id, *contact_fields(person.primaries(), person.slots, slots))
            for person in survivors
        ]
        await update_contacts(slots).run(connection, fixed, rows)
    values: dict[str, list[tuple[int, int, str, str]]] = {kind: [] for kind in KINDS}
    for person in result.created:
        if person.merged_into is None:
            for kind in KINDS:
                values[kind].extend(
                    (person.id, position, value, normalised)
                    for position, (value, normalised) in enumerate(person.values[kind])
                )
    for person in survivors:
        for kind, added in person.added.items():
            values[kind].extend(
                (person.id, position, value, normalised) for position, (value, normalised) in added
            )
    values["emails"].sort(key=lambda row: row[3])
    for kind in KINDS:
        await INSERT_VALUES[kind].run(connection, fixed, values[kind])
    await changes.record(connection, space_id, result.now, result.events())


def primaries_of(values: dict[str, list[str]]) -> dict[str, str | None]:
    """The primary columns of these collections: each one's first value."""
    return {
        PRIMARY_COLUMN[kind]: (listed[0] if listed else None) for kind, listed in values.items()
    }


def _merged_into(person: Any) -> int | None:
    return None if person.merged_into is None else person.live().id


def _slots_set(people: Sequence[Person]) -> tuple[str, ...]:
    """The slots that any of `people` has set."""
    held = {slot for person in people for slot, value in person.slots.items() if value is not None}
    return tuple(slot for slot in SLOTS if slot in held)


def contact_fields(
    primaries: dict[str, str | None], slots: dict[str, Any], written: tuple[str, ...]
) -> tuple[Any, ...]:
    """A contact's primaries, then the `written` slots, as insert_contacts and
    update_contacts take them."""
    picked = tuple(slots[slot] for slot in written)
    return (*(primaries[column] for column in PRIMARIES), *picked)


async def _new_ids(connection: Connection, count: int) -> list[int]:
    if isinstance(connection, SqliteConnection):
        last = await LAST_ID.row(connection, {})
        assert last is not None
        return list(range(last.id + 1, last.id + 1 + count))
    return [row.id for row in await NEXT_IDS.rows(connection, {"n": count})]


def _unchanged(found: WholeRow | None, owner: int, item: Incoming) -> ContactDetail | None:
    """The owner as it stands (`found`, read whole in one snapshot, so a state it was in),
    when the request brings nothing it lacks: every value is held already (by normal form)
    and every slot sent has the value sent. Then a merge would write nothing, and none is
    made. None otherwise, or when the owner was merged away since its look-up: then `_store`
    resolves it."""
    if found is None or found.contact.id != owner:  # merged away since
        return None
    row, stored = found
    if any(row.slots[slot] != value for slot, value in item.slots.items()):
        return None
    held: dict[str, set[str]] = {kind: set() for kind in KINDS}
    values: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for value in stored:
        held[value.kind].add(value.normalised)
        values[value.kind].append(value.value)
    for kind, rows in item.values.items():
        if any(normalised not in held[kind] for _, normalised in rows):
            return None
    return ContactDetail.of(row.id, values, row.slots, row.created_at, row.updated_at)


async def attempts(lease: Lease, write: Callable[[Connection], Awaitable[T]]) -> T:
    """Run `write` in a write transaction, in a new one whenever it loses a race (a unique
    index taken first, a deadlock, contacts changed between their look-up and their lock)."""
    for _attempt_number in range(MAX_ATTEMPTS):
        try:
            return await lease.write(write)
        except Raced:
            continue
        except DRIVER_ERRORS as exc:
            if is_unique_violation(exc) or is_retryable(exc):
                continue
            raise
    raise ServiceUnavailable("This contact is being changed by many requests at once; retry.")


async def _insert_if_new(
    lease: Lease, space_id: int, item: Incoming
) -> tuple[ContactDetail | None, list[int], WholeRow | None]:
    """PostgreSQL: the new contact, written by NEW_CONTACT; when an email is known, nothing is
    written and the owners of the known emails come back instead, and the owner whole when
    there is one. A concurrent create that takes an email while the statement runs leaves
    neither: (None, [], None)."""
    now = utcnow()
    values = shown(item)
    params: dict[str, Any] = {"space_id": space_id, "now": now, **dict.fromkeys(SLOTS)}
    params |= item.slots | primaries_of(values)
    for kind, rows in item.values.items():
        params[f"{kind}_positions"] = list(range(len(rows)))
        params[f"{kind}_values"] = values[kind]
        params[f"{kind}_normalised"] = [normalised for _, normalised in rows]
    try:
        row = await NEW_CONTACT.row(await lease.connect(), params)
    except (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError):
        return None, [], None  # a concurrent write took an email first: resolve in `_store`
    assert row is not None
    if row.created is None:
        return None, sorted(set(row.owners or ())), row.owner
    return ContactDetail.of(row.created, values, item.slots, now, now), [], None


async def email_owners(connection: Connection, space_id: int, emails: list[str]) -> dict[str, int]:
    """Which contact owns each of these emails (normal forms), for those that are known."""
    rows = await OWNERS.rows(connection, {"space_id": space_id, "emails": emails})
    return {row.normalised: row.contact_id for row in rows if row.contact_id is not None}


async def owner_ids(connection: Connection, space_id: int, emails: list[str]) -> list[int]:
    """The contacts that own any of these emails, by id."""
    return sorted(set((await email_owners(connection, space_id, emails)).values()))

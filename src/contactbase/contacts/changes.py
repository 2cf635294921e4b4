"""The change feed (SPEC 6.5): an event per committed change of a contact, written in the
transaction of the change, read in `seq` order with `after`.

Writers do not number their events: a number taken before commit would become visible after a
larger one taken and committed by another writer, and a reader past the larger would miss it
(or every writer of a Space would have to hold a counter until its commit, which halved
creates on this project's machine: docs/performance.md). An event is written with no `seq`,
and numbered after it has committed, by the first reader of the feed that finds it:

- A reader that finds events of its Space without a number locks the Space's counter row
  (`change_counters`), then, in a statement begun after the lock (a snapshot of its own),
  numbers every such event it sees, in the order they were written (their `id`), from the
  counter on; raises the counter; commits. Then it reads the page.
- Only committed events can be seen, so every event numbered is committed; one committed
  after a numbering's snapshot is numbered by a later one, with larger numbers. Numberings of
  a Space run one at a time (the row lock), and each is committed whole. So the numbers visible
  to any reader are a prefix 1..N of the Space's feed, with nothing after it that a later
  numbering could put before it: a reader that polls with `after` never misses an event and
  never sees one twice.
- The events of one contact are numbered in the order their changes committed: a write of a
  contact locks it until it commits, so the next write's event is written (and gets its `id`)
  after the first has committed.

What it costs: writers insert one row and contend on nothing; a read that finds new events
writes their numbers (one statement for all of them). On SQLite the single writer does the
numbering, in its turn.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from contactbase.contacts.models import ChangeCounter, ContactChange
from contactbase.contacts.statements import IN_SPACE, NOW, SPACE, bulk_insert
from contactbase.db import Database, Lease, utcnow
from contactbase.errors import ApiError
from contactbase.prepared import Connection, Prepared, no_rows

CREATED, UPDATED, MERGED, ERASED = (
    "contact.created",
    "contact.updated",
    "contact.merged",
    "contact.erased",
)
# (type, contact id, the contact it was merged into)
Event = tuple[str, int, int | None]


class ChangesExpired(ApiError):
    status, code = 410, "changes_expired"
    summary = "`after` is older than the events kept: re-sync from the list, then follow on"
    body = "ChangesExpiredBody"

    def __init__(self, oldest_after: int) -> None:
        super().__init__(
            f"The events after {oldest_after} are no longer kept; re-read the contacts with the "
            f"list, then follow the feed from after={oldest_after}.",
            oldest_after=oldest_after,
        )


INSERT_EVENTS = bulk_insert(
    ContactChange,
    {"space_id": IN_SPACE, "occurred_at": NOW},
    ["type", "contact_id", "merged_into"],
)


async def record(
    connection: Connection, space_id: int, now: datetime, events: Sequence[Event]
) -> None:
    """Append `events`, in this order, to the Space's feed (numbered once committed)."""
    await INSERT_EVENTS.run(connection, {"space": space_id, "now": now}, list(events))


class Found(NamedTuple):
    found: bool


class Counter(NamedTuple):
    last_seq: int
    purged_through: int


UNNUMBERED = and_(ContactChange.space_id == SPACE, ContactChange.seq.is_(None))
PENDING = Prepared(select(exists().where(UNNUMBERED)), Found)


def _counter(dialect: Any) -> Any:
    """The Space's counter row, made at its first numbering."""
    made = dialect.insert(ChangeCounter).values(
        space_id=IN_SPACE, last_seq=literal_column("0"), purged_through=literal_column("0")
    )
    return made.on_conflict_do_nothing(index_elements=[ChangeCounter.space_id])


MAKE_COUNTER = Prepared(_counter(postgresql), no_rows, sqlite=_counter(sqlite))
COUNTER = select(ChangeCounter.last_seq, ChangeCounter.purged_through).where(
    ChangeCounter.space_id == SPACE
)
LOCK_COUNTER = Prepared(COUNTER.with_for_update(), Counter)
READ_COUNTER = Prepared(COUNTER, Counter)


class Numbered(NamedTuple):
    seq: int


def _numbering() -> Any:
    pending = (
        select(
            ContactChange.id,
            func.row_number().over(order_by=ContactChange.id).label("n"),
        )
        .where(UNNUMBERED)
        .subquery("pending")
    )
    return (
        update(ContactChange)
        .where(ContactChange.id == pending.c.id)
        .values(seq=bindparam("last_seq", type_=BigInteger) + pending.c.n)
        .returning(ContactChange.seq)
    )


NUMBER = Prepared(_numbering(), Numbered)
RAISE_COUNTER = Prepared(
    update(ChangeCounter)
    .where(ChangeCounter.space_id == IN_SPACE)
    .values(last_seq=bindparam("new_last", type_=BigInteger)),
    no_rows,
)


async def number_committed(connection: Connection, space_id: int) -> None:
    """In a write transaction: number the Space's committed events that have no number (the
    feed's readers and the webhooks' fan-out call it before they read)."""
    pending = await PENDING.row(connection, {"space_id": space_id})
    if pending is not None and pending.found:
        await _number(connection, space_id)


async def _number(connection: Connection, space_id: int) -> None:
    """Number them, from the counter on, under the counter row's lock."""
    params = {"space_id": space_id, "space": space_id}
    await MAKE_COUNTER.run(connection, params)
    counter = await LOCK_COUNTER.row(connection, params)
    assert counter is not None
    numbered = await NUMBER.rows(connection, params | {"last_seq": counter.last_seq})
    if numbered:
        new_last = max(row.seq for row in numbered)
        await RAISE_COUNTER.run(connection, params | {"new_last": new_last})


class ChangeRow(NamedTuple):
    seq: int
    type: str
    contact_id: int
    merged_into: int | None
    occurred_at: datetime


_PAGE = (
    select(
        ContactChange.seq,
        ContactChange.type,
        ContactChange.contact_id,
        ContactChange.merged_into,
        ContactChange.occurred_at,
    )
    .where(ContactChange.space_id == SPACE, ContactChange.seq > bindparam("after"))
    .order_by(ContactChange.seq)
    .limit(bindparam("limit"))
)
# SQLite's compiler gives a LIMIT parameter an OFFSET parameter of its own: here a constant.
PAGE = Prepared(_PAGE, ChangeRow, sqlite=_PAGE.offset(literal_column("0")))


async def page(lease: Lease, space_id: int, after: int, limit: int) -> list[ChangeRow]:
    """The events after `after`, in order, once the committed ones are numbered; 410 when
    some of them are no longer kept."""

    async def read(connection: Connection) -> list[ChangeRow]:
        await number_committed(connection, space_id)
        params = {"space_id": space_id, "after": after, "limit": limit}
        rows = await PAGE.rows(connection, params)
        counter = await READ_COUNTER.row(connection, params)
        if counter is not None and after < counter.purged_through:
            raise ChangesExpired(counter.purged_through)
        return rows

    return await lease.write(read)


async def sweep(db: Database, retention_seconds: int) -> None:
    """Delete the numbered events older than the retention, and note up to where, by Space."""
    cutoff = utcnow() - timedelta(seconds=retention_seconds)
    old = (
        select(ContactChange.space_id, func.max(ContactChange.seq).label("seq"))
        .where(ContactChange.occurred_at < cutoff, ContactChange.seq.is_not(None))
        .group_by(ContactChange.space_id)
    )
    async with db.writer() as session, session.begin():
        for space_id, seq in (await session.execute(old)).all():
            await session.execute(
                update(ChangeCounter)
                .where(ChangeCounter.space_id == space_id, ChangeCounter.purged_through < seq)
                .values(purged_through=seq)
            )
            await session.execute(
                delete(ContactChange).where(
                    ContactChange.space_id == space_id, ContactChange.seq <= seq
                )
            )

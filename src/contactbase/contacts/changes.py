"""The change feed (SPEC 6.5): an event per committed change of a contact, appended in the
transaction of the change, read in `seq` order with `after`.

Why a reader that polls with `after` never misses an event and never sees one twice, while
writers commit concurrently: a writing transaction takes its numbers last, from its Space's row
in `change_counters` (`UPDATE … SET last_seq = last_seq + n`, an upsert for the first), and the
row stays locked until the transaction ends. A second writer of the Space waits at that row
until the first has committed (or rolled back: then its numbers were never taken), so the
numbers of a Space are taken in commit order, and a number is visible only once every smaller
one is: a reader's snapshot always holds a prefix of the feed. On SQLite the one writer commits
one transaction at a time, and the writes it groups take their numbers one after another.

What it costs: writers of one Space are serialized from the moment they take their numbers to
their commit (the statement or two after it, and the commit's flush). docs/performance.md has
the figure. The creates of a new person take their number inside their one statement
(statements.NEW_CONTACT), so they hold the row only for the rest of that statement and its
commit.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, func, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite

from contactbase.contacts.models import ChangeCounter, ContactChange
from contactbase.contacts.statements import IN_SPACE, NOW, SPACE, bulk_insert
from contactbase.db import Database, utcnow
from contactbase.errors import ApiError
from contactbase.prepared import Connection, Prepared

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


class Taken(NamedTuple):
    last_seq: int


def _take(dialect: Any) -> Any:
    """Add `count` to the Space's counter (made at its first change) and return the last."""
    table = ChangeCounter.__table__
    count = bindparam("count", type_=ChangeCounter.last_seq.type)
    made = dialect.insert(table).values(
        space_id=IN_SPACE, last_seq=count, purged_through=literal_column("0")
    )
    return made.on_conflict_do_update(
        index_elements=[table.c.space_id], set_={"last_seq": table.c.last_seq + count}
    ).returning(table.c.last_seq)


TAKE = Prepared(_take(postgresql), Taken, sqlite=_take(sqlite))
INSERT_EVENTS = bulk_insert(
    ContactChange,
    {"space_id": IN_SPACE, "occurred_at": NOW},
    ["seq", "type", "contact_id", "merged_into"],
)


async def record(
    connection: Connection, space_id: int, now: datetime, events: Sequence[Event]
) -> None:
    """Append `events`, in this order, to the Space's feed; last in the transaction."""
    if not events:
        return
    taken = await TAKE.row(connection, {"space": space_id, "count": len(events)})
    assert taken is not None
    first = taken.last_seq - len(events) + 1
    rows = [(first + n, *event) for n, event in enumerate(events)]
    await INSERT_EVENTS.run(connection, {"space": space_id, "now": now}, rows)


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


class Purged(NamedTuple):
    purged_through: int


PURGED = Prepared(
    select(ChangeCounter.purged_through).where(ChangeCounter.space_id == SPACE), Purged
)


async def page(connection: Connection, space_id: int, after: int, limit: int) -> list[ChangeRow]:
    """The events after `after`, in order; 410 when some of them are no longer kept. The
    retention mark is read after the events: a sweep between the two reads is seen."""
    rows = await PAGE.rows(connection, {"space_id": space_id, "after": after, "limit": limit})
    purged = await PURGED.row(connection, {"space_id": space_id})
    if purged is not None and after < purged.purged_through:
        raise ChangesExpired(purged.purged_through)
    return rows


async def sweep(db: Database, retention_seconds: int) -> None:
    """Delete the events older than the retention, and note up to where, by Space."""
    cutoff = utcnow() - timedelta(seconds=retention_seconds)
    old = (
        select(ContactChange.space_id, func.max(ContactChange.seq).label("seq"))
        .where(ContactChange.occurred_at < cutoff)
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

"""The statements of contact writes, built once from the models and compiled once (Prepared).

Each is PostgreSQL's form, run on asyncpg; where SQLite needs other SQL for the same work
(PostgreSQL binds a list as an array, SQLite reads it from JSON), SQLite's form sits beside it
with the same parameters. The lists of ids and values are passed as lists either way.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import sqlalchemy.sql as sql
from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Text,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from contactbase.contacts.custom_fields import SLOTS
from contactbase.contacts.models import (
    PRIMARY_COLUMN,
    VALUE_TABLES,
    Contact,
    ContactChange,
    ContactEmail,
)
from contactbase.contacts.reads import (
    CONTACT_COLUMNS,
    ContactRow,
    WholeRow,
    whole_contact_query,
    whole_row,
)
from contactbase.db import Id
from contactbase.prepared import Bulk, Copy, Prepared, among, no_rows

SPACE = bindparam("space_id", type_=BigInteger)
# In an INSERT or UPDATE, a parameter may not bear a column's name: the Space there is `space`.
IN_SPACE = bindparam("space", type_=BigInteger)
IDS = ARRAY(BigInteger)


def of_ids(statement: Any, column: Any, row: Any = no_rows) -> Prepared[Any]:
    """`statement` for the rows whose `column` is among the list `ids`: PostgreSQL binds the
    list as an array (`= ANY`), SQLite reads it from JSON."""
    ids = column == func.any(bindparam("ids", type_=IDS))
    return Prepared(statement.where(ids), row, sqlite=statement.where(among(column, "ids")))


class Owner(NamedTuple):
    normalised: str
    contact_id: int | None  # None: the email is not known in the Space


def _owner_lookups(emails: Any) -> Any:
    """PostgreSQL: each email's owner (or NULL), one look-up of the unique (space_id,
    normalised) index per email. Not `normalised = ANY(:emails)`: prepared statements get a
    generic plan, and without statistics (a fresh database) the planner's generic plan for
    that reads every email of the Space; an equality on both columns of a unique index is
    planned as one row whatever the statistics. The emails come through `contactbase_each`
    (migration 20261130_0003), `unnest` declared to return about 2 rows: `unnest` of a
    parameter is estimated at 10 in a generic plan and at its true length in a custom one, so
    PostgreSQL would plan the statement afresh on every execution."""
    sent = func.contactbase_each(emails).table_valued("normalised").render_derived(name="sent")
    owner = (
        select(ContactEmail.contact_id)
        .where(ContactEmail.space_id == SPACE, ContactEmail.normalised == sent.c.normalised)
        .scalar_subquery()
    )
    return select(sent.c.normalised, owner.label("contact_id")).select_from(sent)


# The owners of the emails (by normal form) in the Space.
OWNERS = Prepared(
    _owner_lookups(bindparam("emails", type_=ARRAY(Text))),
    Owner,
    sqlite=select(ContactEmail.normalised, ContactEmail.contact_id).where(
        ContactEmail.space_id == SPACE, among(ContactEmail.normalised, "emails")
    ),
)


@dataclass(frozen=True)
class NewContact:
    created: int | None  # the new contact's id; None when an email is known
    owners: list[int] | None  # then the contacts owning the known emails
    owner: WholeRow | None  # and when they are one, that contact whole, as the statement saw it

    @classmethod
    def of(cls, created: int | None, owners: list[int] | None, *whole: Any) -> "NewContact":
        return cls(created, owners, whole_row(*whole) if whole[0] is not None else None)


def _new_contact() -> Any:
    """PostgreSQL: the contact and its values in one statement, inserted only when none of
    the emails is known in the Space. Value rows go in by normal form, so that concurrent
    creates take the unique email index in one order and wait for each other instead of
    deadlocking."""
    emails = bindparam("emails_normalised", type_=ARRAY(Text))
    lookups = _owner_lookups(emails).subquery("lookups")
    owners = select(lookups.c.contact_id).where(lookups.c.contact_id.is_not(None)).cte("owners")
    now = bindparam("now", type_=DateTime())
    columns: dict[str, Any] = {"space_id": SPACE, "created_at": now, "updated_at": now}
    for column in PRIMARY_COLUMN.values():
        columns[column] = bindparam(column, type_=Text)
    for slot in SLOTS:
        columns[slot] = bindparam(slot, type_=Contact.__table__.c[slot].type)
    new_contact = (
        insert(Contact)
        .from_select(list(columns), select(*columns.values()).where(~exists(owners.select())))
        .returning(Contact.id)
        .cte("new_contact")
    )
    value_inserts = []
    for kind, table in VALUE_TABLES.items():
        rows = (
            func.unnest(
                bindparam(f"{kind}_positions", type_=ARRAY(Integer)),
                bindparam(f"{kind}_values", type_=ARRAY(Text)),
                emails if kind == "emails" else bindparam(f"{kind}_normalised", type_=ARRAY(Text)),
            )
            .table_valued("position", "value", "normalised")
            .render_derived(name="v")
        )
        value_inserts.append(
            insert(table)
            .from_select(
                ["space_id", "contact_id", "position", "value", "normalised"],
                select(SPACE, new_contact.c.id, rows.c.position, rows.c.value, rows.c.normalised)
                .select_from(new_contact)
                .join(rows, true())
                # Byte order, as Python sorts them for the writer's inserts (writes.py),
                # whatever the database's collation: one order, so no deadlock between them.
                .order_by(rows.c.normalised.collate("C")),
            )
            .cte(kind)
        )
    # The change feed's event of the new contact (numbered once committed: contacts/changes.py).
    event = (
        insert(ContactChange)
        .from_select(
            ["space_id", "type", "contact_id", "occurred_at"],
            select(SPACE, literal_column("'contact.created'"), new_contact.c.id, now).select_from(
                new_contact
            ),
        )
        .cte("created_event")
    )
    value_inserts.append(event)
    # The one owner, whole, in the statement's snapshot: a request that brings it nothing new
    # is answered from this read, without a second round trip (writes._unchanged).
    only_owner = (
        select(func.min(owners.c.contact_id))
        .having(func.count(owners.c.contact_id.distinct()) == literal_column("1"))
        .scalar_subquery()
    )
    owner = whole_contact_query(only_owner).lateral("owner")
    return (
        select(
            select(new_contact.c.id).scalar_subquery(),
            select(func.array_agg(owners.c.contact_id)).scalar_subquery(),
            *owner.c,
        )
        .select_from(select(literal_column("1")).subquery("one"))
        .outerjoin(owner, true())
        .add_cte(*value_inserts)
    )


# PostgreSQL only (SQLite writes a new contact through writes._store).
NEW_CONTACT = Prepared(_new_contact(), NewContact.of)


class NewId(NamedTuple):
    id: int


_CONTACTS: Any = literal_column(f"'{Contact.__tablename__}'")
# New contacts' ids, taken before they are written, ascending: the plan (merging.py) knows
# which of its contacts is oldest before any is written. PostgreSQL: from the ids' sequence
# (that of NEW_CONTACT's inserts too).
NEXT_IDS = Prepared(
    select(
        func.nextval(
            select(func.pg_get_serial_sequence(_CONTACTS, literal_column("'id'"))).scalar_subquery()
        ).label("id")
    ).select_from(func.generate_series(literal_column("1"), bindparam("n", type_=Integer))),
    NewId,
)
# SQLite: the last id given (AUTOINCREMENT's record of it, which an insert of a higher id
# raises). The single writer holds the file's write lock, so no one takes the next ones first.
_SQLITE_SEQUENCE = sql.table("sqlite_sequence", sql.column("name"), sql.column("seq"))
LAST_ID = Prepared(
    select(
        func.coalesce(
            select(_SQLITE_SEQUENCE.c.seq)
            .where(_SQLITE_SEQUENCE.c.name == _CONTACTS)
            .scalar_subquery(),
            literal_column("0"),
        )
    ),
    NewId,
)

# The contacts `ids`, locked until the transaction ends, oldest first.
LOCK_CONTACTS = of_ids(
    select(*CONTACT_COLUMNS)
    .where(Contact.space_id == SPACE)
    .order_by(Contact.id)
    .with_for_update(),
    Contact.id,
    ContactRow.of,
)


NOW = bindparam("now", type_=DateTime())


def _row_params(columns: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A row's columns by name (`columns`: name -> type; their parameters are named
    `r_<name>`), in PostgreSQL's form (the columns of `unnest` over one array per column) and
    in SQLite's (one scalar parameter each)."""
    unnested = (
        func.unnest(*(bindparam(f"r_{name}", type_=ARRAY(kind)) for name, kind in columns.items()))
        .table_valued(*(f"r_{name}" for name in columns))
        .render_derived(name="r")
    )
    pg = {name: unnested.c[f"r_{name}"] for name in columns}
    sqlite = {name: bindparam(f"r_{name}", type_=kind) for name, kind in columns.items()}
    return pg, sqlite


def _bulk(columns: dict[str, Any], write: Callable[[dict[str, Any]], Any]) -> Bulk:
    """The Bulk statement `write(r)`, `r` being a row's columns by name (_row_params). An
    insert is `bulk_insert`."""
    pg, sqlite = _row_params(columns)
    return Bulk(write(pg), write(sqlite), [f"r_{name}" for name in columns])


def bulk_insert(model: Any, fixed: dict[str, Any], columns: Sequence[str]) -> Bulk:
    """Rows into `model`'s table: the `fixed` values (column -> parameter) and these columns
    of each row. On PostgreSQL INSERT ... SELECT from `unnest`, or COPY for many rows; on
    SQLite INSERT ... VALUES (stepped per row, a third cheaper than INSERT ... SELECT of the
    parameters)."""
    pg_row, sqlite_row = _row_params(_of(model, columns))
    pg = insert(model).from_select(
        [*fixed, *columns], select(*fixed.values(), *(pg_row[name] for name in columns))
    )
    copy = Copy(
        model.__tablename__, {name: value.key for name, value in fixed.items()}, list(columns)
    )
    sqlite = insert(model).values({**fixed, **sqlite_row})
    return Bulk(pg, sqlite, [f"r_{name}" for name in columns], copy)


def _of(model: Any, columns: Sequence[str]) -> dict[str, Any]:
    """The types of these columns of `model`'s table."""
    return {name: model.__table__.c[name].type for name in columns}


PRIMARIES = list(PRIMARY_COLUMN.values())


@lru_cache(maxsize=64)
def insert_contacts(slots: tuple[str, ...]) -> Bulk:
    """New contacts, with their primaries and these slots (the others stay NULL: binding
    thirty NULLs a row was a third of SQLite's cost of the insert)."""
    fixed = {"space_id": IN_SPACE, "created_at": NOW, "updated_at": NOW}
    return bulk_insert(Contact, fixed, ["id", "merged_into_id", *PRIMARIES, *slots])


@lru_cache(maxsize=64)
def update_contacts(slots: tuple[str, ...]) -> Bulk:
    """Contacts' primaries and these slots, each written whole (what did not change is
    written as it was); the other slots stay as they are."""
    columns = [*PRIMARIES, *slots]
    return _bulk(
        _of(Contact, ["id", *columns]),
        lambda r: (
            update(Contact)
            .where(Contact.space_id == IN_SPACE, Contact.id == r["id"])
            .values(updated_at=NOW, **{name: r[name] for name in columns})
        ),
    )


# Merged contacts (`loser`) become aliases of their survivors; aliases they had are re-pointed,
# so that resolving an id is one step.
_PAIRS = {"loser": Id, "survivor": Id}
REPOINT_ALIASES = _bulk(
    _PAIRS,
    lambda r: (
        update(Contact)
        .where(Contact.space_id == IN_SPACE, Contact.merged_into_id == r["loser"])
        .values(merged_into_id=r["survivor"])
    ),
)
RETIRE = _bulk(
    _PAIRS,
    lambda r: (
        update(Contact)
        .where(Contact.space_id == IN_SPACE, Contact.id == r["loser"])
        .values(merged_into_id=r["survivor"], updated_at=NOW)
    ),
)
VALUE_COLUMNS = ["contact_id", "position", "value", "normalised"]


# Value rows of any number of contacts into one collection's table.
INSERT_VALUES = {
    kind: bulk_insert(model, {"space_id": IN_SPACE}, VALUE_COLUMNS)
    for kind, model in VALUE_TABLES.items()
}

DELETE_VALUES = {
    kind: Prepared(
        delete(table).where(table.space_id == SPACE, table.contact_id == bindparam("contact_id")),
        no_rows,
    )
    for kind, table in VALUE_TABLES.items()
}
DELETE_VALUES_OF = {
    kind: of_ids(delete(table).where(table.space_id == SPACE), table.contact_id)
    for kind, table in VALUE_TABLES.items()
}

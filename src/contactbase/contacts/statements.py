"""The statements of contact writes, built once from the models and compiled once (Prepared).

Each is PostgreSQL's form, run on asyncpg; where SQLite needs other SQL for the same work
(PostgreSQL binds a list as an array, SQLite reads it from JSON), SQLite's form sits beside it
with the same parameters. The lists of ids and values are passed as lists either way.
"""

from typing import Any, NamedTuple

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
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from contactbase.contacts.custom_fields import SLOTS
from contactbase.contacts.models import PRIMARY_COLUMN, VALUE_TABLES, Contact, ContactEmail
from contactbase.contacts.reads import CONTACT_COLUMNS, ContactRow
from contactbase.prepared import Prepared, among, json_each, no_rows

SPACE = bindparam("space_id", type_=BigInteger)
# In an INSERT or UPDATE, a parameter may not bear a column's name: the Space there is `space`.
IN_SPACE = bindparam("space", type_=BigInteger)
IDS = ARRAY(BigInteger)


def _of_ids(statement: Any, column: Any, row: Any = no_rows) -> Prepared[Any]:
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


class NewContact(NamedTuple):
    created: int | None  # the new contact's id; None when an email is known
    owners: list[int] | None  # then the contacts owning the known emails


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
    return select(
        select(new_contact.c.id).scalar_subquery(),
        select(func.array_agg(owners.c.contact_id)).scalar_subquery(),
    ).add_cte(*value_inserts)


# PostgreSQL only (SQLite writes a new contact with INSERT_CONTACT and INSERT_VALUES).
NEW_CONTACT = Prepared(_new_contact(), NewContact)


class NewId(NamedTuple):
    id: int


def _contact_columns() -> dict[str, Any]:
    """A contact's primaries and slots as parameters named after their columns (`set_…`)."""
    columns: dict[str, Any] = {c: bindparam(f"set_{c}") for c in PRIMARY_COLUMN.values()}
    return columns | {slot: bindparam(f"set_{slot}") for slot in SLOTS}


INSERT_CONTACT = Prepared(
    insert(Contact)
    .values(
        space_id=IN_SPACE,
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
        **_contact_columns(),
    )
    .returning(Contact.id),
    NewId,
)
# Every primary and slot, written whole (what did not change is written as it was).
UPDATE_CONTACT = Prepared(
    update(Contact)
    .where(Contact.space_id == IN_SPACE, Contact.id == bindparam("contact_id"))
    .values(updated_at=bindparam("now"), **_contact_columns()),
    no_rows,
)

# The contacts `ids`, locked until the transaction ends, oldest first.
LOCK_CONTACTS = _of_ids(
    select(*CONTACT_COLUMNS)
    .where(Contact.space_id == SPACE)
    .order_by(Contact.id)
    .with_for_update(),
    Contact.id,
    ContactRow.of,
)


def _insert_values(table: Any) -> Prepared[None]:
    """The values of one contact into `table`, from three lists of one length: positions,
    values and their normal forms (PostgreSQL as arrays, SQLite as JSON)."""
    columns = ["space_id", "contact_id", "position", "value", "normalised"]
    contact = bindparam("contact_id", type_=BigInteger)
    rows = (
        func.unnest(
            bindparam("positions", type_=ARRAY(Integer)),
            bindparam("values", type_=ARRAY(Text)),
            bindparam("normalised", type_=ARRAY(Text)),
        )
        .table_valued("position", "value", "normalised")
        .render_derived(name="v")
    )
    listed = [json_each(name, name) for name in ("positions", "values", "normalised")]
    positions, values, normalised = listed
    return Prepared(
        insert(table).from_select(
            columns,
            select(SPACE, contact, rows.c.position, rows.c.value, rows.c.normalised).select_from(
                rows
            ),
        ),
        no_rows,
        sqlite=insert(table).from_select(
            columns,
            select(SPACE, contact, positions.c.value, values.c.value, normalised.c.value)
            .select_from(positions)
            .join(values, values.c.key == positions.c.key)
            .join(normalised, normalised.c.key == positions.c.key)
            .order_by(positions.c.key),
        ),
    )


# The collections' values: in, and out, of one contact or of several.
INSERT_VALUES = {kind: _insert_values(table) for kind, table in VALUE_TABLES.items()}
DELETE_VALUES = {
    kind: Prepared(
        delete(table).where(table.space_id == SPACE, table.contact_id == bindparam("contact_id")),
        no_rows,
    )
    for kind, table in VALUE_TABLES.items()
}
DELETE_VALUES_OF = {
    kind: _of_ids(delete(table).where(table.space_id == SPACE), table.contact_id)
    for kind, table in VALUE_TABLES.items()
}

# Make contacts `ids` aliases of `survivor`, and re-point the aliases they had.
SURVIVOR = bindparam("survivor", type_=BigInteger)
REPOINT_ALIASES = _of_ids(
    update(Contact).where(Contact.space_id == IN_SPACE).values(merged_into_id=SURVIVOR),
    Contact.merged_into_id,
)
RETIRE = _of_ids(
    update(Contact)
    .where(Contact.space_id == IN_SPACE)
    .values(merged_into_id=SURVIVOR, updated_at=bindparam("now")),
    Contact.id,
)

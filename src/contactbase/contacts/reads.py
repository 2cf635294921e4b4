"""Reading contacts: one by id, the list's pages, every email of a page."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    bindparam,
    func,
    literal_column,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from contactbase.contacts.custom_fields import SLOTS
from contactbase.contacts.models import (
    PRIMARY_COLUMN,
    VALUE_TABLES,
    Contact,
    ContactEmail,
    ContactPhone,
    ContactValue,
)
from contactbase.contacts.pagination import Cursor
from contactbase.contacts.schemas import ContactDetail
from contactbase.contacts.values import normalise_email, normalise_phone
from contactbase.db import Id
from contactbase.errors import NotFound
from contactbase.prepared import Connection, Prepared, among
from contactbase.spaces.models import Space
from contactbase.sqlite import SqliteConnection


class ValueRow(NamedTuple):
    """A value of one of a contact's collections, as the values query returns it."""

    kind: str
    contact_id: int
    position: int
    value: str
    normalised: str


@dataclass(frozen=True)
class ContactRow:
    """A contact's row as the writes and reads need it: identity, alias link, times, the
    primary values (by column: email, phone, name, location) and the slots."""

    id: int
    merged_into_id: int | None
    created_at: datetime
    updated_at: datetime
    primaries: dict[str, str | None]
    slots: dict[str, Any]

    @classmethod
    def of(cls, *columns: Any) -> "ContactRow":
        """From the columns of CONTACT_COLUMNS, in their order."""
        contact_id, merged_into_id, created_at, updated_at, *rest = columns
        primaries = dict(zip(PRIMARY_COLUMN.values(), rest[: len(PRIMARY_COLUMN)], strict=True))
        slots = dict(zip(SLOTS, rest[len(PRIMARY_COLUMN) :], strict=True))
        return cls(contact_id, merged_into_id, created_at, updated_at, primaries, slots)


CONTACT_COLUMNS = (
    Contact.id,
    Contact.merged_into_id,
    Contact.created_at,
    Contact.updated_at,
    *(getattr(Contact, column) for column in PRIMARY_COLUMN.values()),
    *(getattr(Contact, slot) for slot in SLOTS),
)


def _values_query(of_contacts: Callable[[type[ContactValue]], ColumnElement[bool]]) -> Any:
    """Every value row of the contacts chosen, all four collections in one query."""
    return union_all(
        *(
            select(
                literal_column(f"'{kind}'").label("kind"),
                table.contact_id,
                table.position,
                table.value,
                table.normalised,
            ).where(table.space_id == bindparam("space_id"), of_contacts(table))
            for kind, table in VALUE_TABLES.items()
        )
    ).order_by(text("contact_id"), text("position"))


# Built once: of one contact (as a get runs it), and of some contacts.
CONTACT_VALUES = Prepared(
    _values_query(lambda table: table.contact_id == bindparam("contact_id")), ValueRow
)
CONTACTS_VALUES = Prepared(
    _values_query(
        lambda table: table.contact_id == func.any(bindparam("contact_ids", type_=ARRAY(Id)))
    ),
    ValueRow,
    sqlite=_values_query(lambda table: among(table.contact_id, "contact_ids")),
)


async def stored_values(
    connection: Connection, space_id: int, contact_ids: Sequence[int]
) -> dict[str, list[ValueRow]]:
    """Each collection's rows for these contacts, by contact id, then position."""
    stored: dict[str, list[ValueRow]] = {kind: [] for kind in VALUE_TABLES}
    params = {"space_id": space_id, "contact_ids": list(contact_ids)}
    for value in await CONTACTS_VALUES.rows(connection, params):
        stored[value.kind].append(value)
    return stored


_CONTACT_ROW_QUERY = select(*CONTACT_COLUMNS).where(
    Contact.space_id == bindparam("space_id"), Contact.id == bindparam("contact_id")
)
CONTACT_ROW_QUERY = Prepared(_CONTACT_ROW_QUERY, ContactRow.of)
CONTACT_ROW_LOCKED = Prepared(_CONTACT_ROW_QUERY.with_for_update(), ContactRow.of)


async def contact_row(
    connection: Connection, space_id: int, contact_id: int, *, lock: bool = False
) -> ContactRow | None:
    """The contact's row in the Space, or None; `lock` holds it until the transaction ends."""
    query = CONTACT_ROW_LOCKED if lock else CONTACT_ROW_QUERY
    return await query.row(connection, {"space_id": space_id, "contact_id": contact_id})


async def _resolved(connection: Connection, space_id: int, contact_id: int) -> ContactRow | None:
    """The row of the contact an id names: itself, or the survivor it was merged into."""
    row = await contact_row(connection, space_id, contact_id)
    if row is not None and row.merged_into_id is not None:
        row = await contact_row(connection, space_id, row.merged_into_id)
    return row


async def resolve(connection: Connection, space_id: int, contact_id: int) -> ContactRow:
    """The row of the contact an id names (an alias names its survivor); 404 when none."""
    row = await _resolved(connection, space_id, contact_id)
    if row is None:
        raise NotFound(f"No contact with id {contact_id}.")
    return row


def whole_contact_query(asked_id: Any) -> Any:
    """PostgreSQL: the contact an id names (itself, or the survivor it was merged into), its
    row and every value, in one statement and so in one snapshot: one row, the values as
    arrays (kind, position, value, normalised; NULL when it holds none). Each step is a
    LATERAL on the one before (the id asked, then its contact, then the values), and none is
    flattened into a join, so the plan starts from the id whatever the statistics: without them
    (a fresh database) PostgreSQL planned the plain join by reading the Space's every contact."""
    asked = aliased(Contact, name="asked")
    contact = (
        select(*CONTACT_COLUMNS)
        .where(
            Contact.space_id == asked.space_id,
            Contact.id == func.coalesce(asked.merged_into_id, asked.id),
        )
        .limit(literal_column("1"))  # one row (an id), and PostgreSQL keeps the subquery
        .lateral("contact")
    )
    held = union_all(
        *(
            select(
                literal_column(f"'{kind}'").label("kind"),
                table.position,
                table.value,
                table.normalised,
            )
            .where(table.space_id == asked.space_id, table.contact_id == contact.c.id)
            .correlate_except(table)  # `asked` and `contact` are the enclosing query's
            for kind, table in VALUE_TABLES.items()
        )
    ).subquery("held")
    order = (held.c.kind, held.c.position)
    values = select(
        *(func.array_agg(aggregate_order_by(column, *order)) for column in held.c)
    ).lateral("held_values")
    return (
        select(*contact.c, *values.c)
        .select_from(asked)
        .join(contact, true())
        .join(values, true())
        .where(asked.space_id == bindparam("space_id"), asked.id == asked_id)
    )


class WholeRow(NamedTuple):
    contact: ContactRow
    values: list[ValueRow]


def whole_row(*columns: Any) -> WholeRow:
    contact = ContactRow.of(*columns[: len(CONTACT_COLUMNS)])
    kinds, positions, values, normalised = (
        column or [] for column in columns[len(CONTACT_COLUMNS) :]
    )
    held = [
        ValueRow(kind, contact.id, position, value, form)
        for kind, position, value, form in zip(kinds, positions, values, normalised, strict=True)
    ]
    return WholeRow(contact, held)


WHOLE_CONTACT = Prepared(whole_contact_query(bindparam("contact_id")), whole_row)


async def whole_contact(
    connection: Connection, space_id: int, contact_id: int
) -> "WholeRow | None":
    """The contact an id names (an alias names its survivor) with all its values, as one
    state of it; None when the Space has no such id. On PostgreSQL one statement
    (WHOLE_CONTACT); on SQLite the row and the values, read in the snapshot of the reader's
    transaction (SQLite has no LATERAL)."""
    if not isinstance(connection, SqliteConnection):
        params = {"space_id": space_id, "contact_id": contact_id}
        return await WHOLE_CONTACT.row(connection, params)
    row = await _resolved(connection, space_id, contact_id)
    if row is None:
        return None
    values = await CONTACT_VALUES.rows(connection, {"space_id": space_id, "contact_id": row.id})
    return WholeRow(row, values)


async def get_contact(connection: Connection, space_id: int, contact_id: int) -> ContactDetail:
    """The contact with this id in the Space; an alias id gives the contact it was merged into."""
    found = await whole_contact(connection, space_id, contact_id)
    if found is None:
        raise NotFound(f"No contact with id {contact_id}.")
    row, held = found
    values: dict[str, list[str]] = {kind: [] for kind in VALUE_TABLES}
    for value in held:
        values[value.kind].append(value.value)
    return ContactDetail.of(row.id, values, row.slots, row.created_at, row.updated_at)


@dataclass(frozen=True)
class ListFilters:
    start: datetime | None = None  # UTC, inclusive
    end: datetime | None = None  # UTC, exclusive
    email: str | None = None
    phone: str | None = None
    # custom_field_filters, as clauses (filter_clauses.where)
    custom: Sequence[ColumnElement[bool]] = ()


def creation_window(
    start: str | None, end: str | None, timezone: str
) -> tuple[datetime | None, datetime | None]:
    """Inclusive local `YYYY-MM-DD HH:MM:SS` bounds as a UTC [start, end) window."""
    zone = ZoneInfo(timezone)

    def to_utc(text: str, *, after: bool) -> datetime:
        local = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
        try:
            moment = local.astimezone(UTC).replace(tzinfo=None)
            return moment + timedelta(seconds=1) if after else moment
        except OverflowError:  # at the ends of the calendar: as far as a datetime goes
            return datetime.max if local.year > 1 else datetime.min

    return (
        to_utc(start, after=False) if start else None,
        to_utc(end, after=True) if end else None,
    )


def _holds(table: type[ContactValue], space_id: int, normalised: str) -> ColumnElement[bool]:
    """The contact holds a value of this normal form in `table`."""
    return Contact.id.in_(
        select(table.contact_id).where(table.space_id == space_id, table.normalised == normalised)
    )


class ListedRow(NamedTuple):
    """A contact as the list shows it: its primary values, and its slots when asked for."""

    id: int
    email: str
    name: str | None
    phone: str | None
    location: str | None
    slots: dict[str, Any] | None


async def list_contacts(
    session: AsyncSession,
    space_id: int,
    filters: ListFilters,
    cursor: Cursor | None,
    per_page: int,
    *,
    with_custom_fields: bool = False,
) -> tuple[list[ListedRow], bool]:
    """A page of contacts, newest first, and whether more lie beyond it in its direction."""
    columns = [Contact.id, Contact.email, Contact.name, Contact.phone, Contact.location]
    if with_custom_fields:
        columns += [getattr(Contact, slot) for slot in SLOTS]
    query = select(*columns).where(Contact.space_id == space_id, Contact.merged_into_id.is_(None))
    if filters.start is not None:
        query = query.where(Contact.created_at >= filters.start)
    if filters.end is not None:
        query = query.where(Contact.created_at < filters.end)
    if filters.email is not None:
        query = query.where(_holds(ContactEmail, space_id, normalise_email(filters.email)))
    if filters.phone is not None:
        query = query.where(_holds(ContactPhone, space_id, normalise_phone(filters.phone)))
    query = query.where(*filters.custom)
    backwards = cursor is not None and not cursor.forward
    if cursor is not None:
        query = query.where(Contact.id > cursor.id if backwards else Contact.id < cursor.id)
    query = query.order_by(Contact.id.asc() if backwards else Contact.id.desc())
    result = await (await session.connection()).execute(query.limit(per_page + 1))
    rows = [
        ListedRow(
            row.id,
            row.email,
            row.name,
            row.phone,
            row.location,
            dict(zip(SLOTS, row[5:], strict=True)) if with_custom_fields else None,
        )
        for row in result
    ]
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
    rows = await (await session.connection()).execute(
        select(ContactEmail.contact_id, ContactEmail.value)
        .where(ContactEmail.space_id == space_id, ContactEmail.contact_id.in_(contact_ids))
        .order_by(ContactEmail.contact_id, ContactEmail.position)
    )
    for contact_id, value in rows:
        emails[contact_id].append(value)
    return emails


async def slot_labels(session: AsyncSession, space_id: int) -> dict[str, str]:
    """The Space's names of its custom-field slots (`space set-label`)."""
    labels = await session.scalar(select(Space.custom_field_labels).where(Space.id == space_id))
    return dict(labels or {})


def today_in(timezone: str) -> date:
    """Today's date in the Space's timezone: what `age_*` filters count back from."""
    return datetime.now(ZoneInfo(timezone)).date()

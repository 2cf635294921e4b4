"""PostgreSQL only: a new contact and all its values written in one statement, on asyncpg.

The generic path (service.py) costs a round trip per table; on PostgreSQL a create of a new
person is the hot path, so it is one statement of data-modifying CTEs: it inserts nothing when
an email is already known, and reports how many emails it could claim when a concurrent create
took one first (ON CONFLICT DO NOTHING waits for that transaction, then skips the row).
"""

from typing import Any

import asyncpg
from sqlalchemy import text

from contactbase.contacts.custom_fields import NUMBER_SLOTS, SLOTS
from contactbase.contacts.models import PRIMARY_COLUMN, VALUE_TABLES
from contactbase.contacts.reads import contact_detail
from contactbase.contacts.schemas import ContactDetail
from contactbase.db import Prepared
from contactbase.spaces.service import utcnow


def _slot_type(slot: str) -> str:
    return "DOUBLE PRECISION" if int(slot.rsplit("_", 1)[1]) in NUMBER_SLOTS else "TEXT"


def _statement() -> str:
    slot_columns = ", ".join(SLOTS)
    slot_values = ", ".join(f"CAST(:{slot} AS {_slot_type(slot)})" for slot in SLOTS)
    parts = [
        "owners AS (SELECT contact_id FROM contact_emails WHERE space_id = :space_id"
        " AND normalised = ANY(CAST(:emails_normalised AS TEXT[])))",
        "new_contact AS (INSERT INTO contacts"
        f" (space_id, email, phone, name, location, created_at, updated_at, {slot_columns})"
        " SELECT CAST(:space_id AS BIGINT), CAST(:email AS TEXT), CAST(:phone AS TEXT),"
        " CAST(:name AS TEXT), CAST(:location AS TEXT), CAST(:now AS TIMESTAMP),"
        f" CAST(:now AS TIMESTAMP), {slot_values}"
        " WHERE NOT EXISTS (SELECT 1 FROM owners) RETURNING id)",
    ]
    for kind, model in VALUE_TABLES.items():
        table = model.__tablename__
        # Rows go in by normal form, so concurrent creates take the unique index in one order.
        claim = " ON CONFLICT DO NOTHING RETURNING 1" if kind == "emails" else ""
        parts.append(
            f"{kind} AS (INSERT INTO {table} (space_id, contact_id, position, value, normalised)"
            " SELECT CAST(:space_id AS BIGINT), new_contact.id, v.position, v.value, v.normalised"
            f" FROM new_contact, unnest(CAST(:{kind}_positions AS INTEGER[]),"
            f" CAST(:{kind}_values AS TEXT[]), CAST(:{kind}_normalised AS TEXT[]))"
            f" AS v(position, value, normalised) ORDER BY v.normalised{claim})"
        )
    return (
        "WITH " + ",\n".join(parts) + "\nSELECT (SELECT id FROM new_contact), "
        "(SELECT count(*) FROM emails)"
    )


STATEMENT = Prepared(text(_statement()))
UNDO = Prepared(text("DELETE FROM contacts WHERE space_id = :space_id AND id = :id"))


async def insert_if_new(
    connection: "asyncpg.Connection[Any]",
    space_id: int,
    incoming: dict[str, list[tuple[str, str]]],
    slots: dict[str, Any],
) -> ContactDetail | None:
    """The new contact's ContactDetail, or None when an email is known (nothing is written)."""
    now = utcnow()
    values = {kind: [value for value, _ in incoming[kind]] for kind in VALUE_TABLES}
    params: dict[str, Any] = {"space_id": space_id, "now": now, **dict.fromkeys(SLOTS), **slots}
    for kind, rows in incoming.items():
        params[PRIMARY_COLUMN[kind]] = values[kind][0] if rows else None
        params[f"{kind}_positions"] = list(range(len(rows)))
        params[f"{kind}_values"] = values[kind]
        params[f"{kind}_normalised"] = [normalised for _, normalised in rows]
    contact_id, claimed = await STATEMENT.row(connection, params)
    if contact_id is None:
        return None
    if claimed < len(incoming["emails"]):
        # A concurrent create took an email first: this contact was never seen by anyone, so
        # it goes (its values with it) and the caller merges into the owner instead.
        await UNDO.rows(connection, {"space_id": space_id, "id": contact_id})
        return None
    return contact_detail(contact_id, values, slots, now, now)

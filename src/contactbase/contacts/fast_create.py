"""PostgreSQL only: a new contact and all its values written in one statement, on asyncpg.

The generic path (service.py) costs a round trip per table; on PostgreSQL a create of a new
person is the hot path, so it is one statement of data-modifying CTEs, run as its own
transaction (no BEGIN or COMMIT: two round trips fewer). It inserts nothing when an email is
already known; when a concurrent create takes one of the emails first, the unique index fails
the whole statement (after waiting for that create to commit), so nothing of it is written
either way, and the caller merges instead.
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
        parts.append(
            f"{kind} AS (INSERT INTO {table} (space_id, contact_id, position, value, normalised)"
            " SELECT CAST(:space_id AS BIGINT), new_contact.id, v.position, v.value, v.normalised"
            f" FROM new_contact, unnest(CAST(:{kind}_positions AS INTEGER[]),"
            f" CAST(:{kind}_values AS TEXT[]), CAST(:{kind}_normalised AS TEXT[]))"
            " AS v(position, value, normalised) ORDER BY v.normalised)"
        )
    return "WITH " + ",\n".join(parts) + "\nSELECT id FROM new_contact"


STATEMENT = Prepared(text(_statement()))


async def insert_if_new(
    connection: "asyncpg.Connection[Any]",
    space_id: int,
    incoming: dict[str, list[tuple[str, str]]],
    slots: dict[str, Any],
) -> ContactDetail | None:
    """The new contact's ContactDetail, or None when an email is known, or became known while
    the statement ran (nothing is written). The connection must not be in a transaction."""
    now = utcnow()
    values = {kind: [value for value, _ in incoming[kind]] for kind in VALUE_TABLES}
    params: dict[str, Any] = {"space_id": space_id, "now": now, **dict.fromkeys(SLOTS), **slots}
    for kind, rows in incoming.items():
        params[PRIMARY_COLUMN[kind]] = values[kind][0] if rows else None
        params[f"{kind}_positions"] = list(range(len(rows)))
        params[f"{kind}_values"] = values[kind]
        params[f"{kind}_normalised"] = [normalised for _, normalised in rows]
    try:
        row = await STATEMENT.row(connection, params)
    except asyncpg.UniqueViolationError:
        return None  # a concurrent create took an email first
    if row is None:
        return None
    return contact_detail(row[0], values, slots, now, now)

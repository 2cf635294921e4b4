"""Updating a contact (PUT /contacts/{id}): each collection sent replaced whole, the slots
replaced when `custom_fields` is sent, on the contact an id names, in one write transaction of
the write path (writes.attempts), with its change-feed event.

An update never meets the cap of merging.MAX_VALUES (SPEC 6.8), so it does not check it: each
collection sent replaces the stored one with at most schemas.MAX_ITEMS values (a test holds
MAX_ITEMS below MAX_VALUES), and the others stay as they are."""

from typing import Any

from contactbase.contacts import changes, writes
from contactbase.contacts.custom_fields import SLOTS, sent_slots, to_wire
from contactbase.contacts.merging import KINDS
from contactbase.contacts.reads import contact_row, resolve
from contactbase.contacts.schemas import ContactUpdate, ContactUpdated
from contactbase.contacts.statements import DELETE_VALUES, INSERT_VALUES, update_contacts
from contactbase.contacts.values import normalise_email
from contactbase.db import Lease, utcnow
from contactbase.errors import InvalidInput
from contactbase.prepared import Connection
from contactbase.validation import show


async def update_contact(
    lease: Lease, space_id: int, contact_id: int, payload: ContactUpdate
) -> ContactUpdated:
    """Replace each collection sent (and all slots, when custom_fields is sent) in one go."""
    sent = payload.model_fields_set
    replaced = {
        kind: writes.dedupe(getattr(payload, kind), writes.NORMALISE[kind])
        for kind in KINDS
        if kind in sent
    }
    slots = None
    if "custom_fields" in sent:
        slots = dict.fromkeys(SLOTS) | sent_slots(payload.custom_fields)

    async def write(connection: Connection) -> ContactUpdated:
        target = (await resolve(connection, space_id, contact_id)).id
        row = await contact_row(connection, space_id, target, lock=True)
        if row is None or row.merged_into_id is not None:
            raise writes.Raced()  # merged into another contact since: update that one
        if "emails" in replaced:
            await _refuse_emails_of_others(connection, space_id, target, payload.emails)
        now = utcnow()
        fixed = {"space": space_id, "now": now}
        for kind, rows in replaced.items():
            params = {"space_id": space_id, "contact_id": target}
            await DELETE_VALUES[kind].run(connection, params)
            ordered = sorted(enumerate(rows), key=lambda row: row[1][1])
            await INSERT_VALUES[kind].run(
                connection, fixed, [(target, position, *value) for position, value in ordered]
            )
        values = {kind: [value for value, _ in rows] for kind, rows in replaced.items()}
        primaries = row.primaries | writes.primaries_of(values)
        written = SLOTS if slots is not None else ()
        await update_contacts(written).run(
            connection,
            fixed,
            [(target, *writes.contact_fields(primaries, slots or row.slots, written))],
        )
        answer: dict[str, Any] = dict(values)
        if slots is not None:
            answer["custom_fields"] = to_wire(slots)
        await changes.record(connection, space_id, now, [(changes.UPDATED, target, None)])
        return ContactUpdated(id=target, **answer)

    return await writes.attempts(lease, write)


async def _refuse_emails_of_others(
    connection: Connection, space_id: int, contact_id: int, emails: list[str]
) -> None:
    """422 when any of `emails` belongs to another contact of the Space."""
    sent = [normalised for _, normalised in writes.dedupe(emails, normalise_email)]
    owners = await writes.email_owners(connection, space_id, sent)
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

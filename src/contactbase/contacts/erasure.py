"""Erasing a person (SPEC 6.4): the contact an id names, every alias merged into it, all their
values and custom fields, and the stored idempotent answers that name any of them; what is
left is a tombstone per id (id, Space, time).

Why an erasure is final when creates, merges and updates of the same emails race it: every
write that reads a contact's values, to carry them into another contact or to keep them,
first locks the contact's row and reads its values after the lock (writes._store, PUT), and
a write that finds a locked contact gone or merged begins again from the emails (writes.Raced).
The erasure locks the same row before it reads or deletes anything. So the two are ordered:
a write before the erasure has put whatever it carried into the erased contact (or one of its
aliases), and is erased with it; a write after it finds no contact to lock, looks the emails up
again, finds them free, and writes only what it was sent. On SQLite the single writer orders
them. A merge into the contact needs its lock too, so the aliases listed under the lock are
all of them.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, func, select

from contactbase.contacts import changes
from contactbase.contacts.merging import KINDS
from contactbase.contacts.models import Contact, IdempotentContact, IdempotentRequest, Tombstone
from contactbase.contacts.reads import contact_row, resolve, stored_values
from contactbase.contacts.statements import (
    DELETE_VALUES_OF,
    IDS,
    IN_SPACE,
    NOW,
    SPACE,
    NewId,
    bulk_insert,
    of_ids,
)
from contactbase.contacts.values import normalise_email
from contactbase.contacts.writes import Raced, attempts, owner_ids
from contactbase.db import Lease, utcnow
from contactbase.errors import NotFound
from contactbase.prepared import Connection, Prepared, among


class Key(NamedTuple):
    key: str


ALIASES = Prepared(
    select(Contact.id).where(
        Contact.space_id == SPACE, Contact.merged_into_id == bindparam("contact_id")
    ),
    NewId,
)
DELETE_CONTACTS = of_ids(delete(Contact).where(Contact.space_id == SPACE), Contact.id)


def _named(among_ids: Any) -> Any:
    named = select(IdempotentContact.key).where(IdempotentContact.space_id == SPACE, among_ids)
    return (
        delete(IdempotentRequest)
        .where(IdempotentRequest.space_id == SPACE, IdempotentRequest.key.in_(named))
        .returning(IdempotentRequest.key)
    )


# The stored idempotent answers that name any of the contacts `ids`.
FORGET_ANSWERS = Prepared(
    _named(IdempotentContact.contact_id == func.any(bindparam("ids", type_=IDS))),
    Key,
    sqlite=_named(among(IdempotentContact.contact_id, "ids")),
)
INSERT_TOMBSTONES = bulk_insert(Tombstone, {"space_id": IN_SPACE, "erased_at": NOW}, ["contact_id"])


@dataclass(frozen=True)
class Erased:
    """What an erasure removed, as counts (never values)."""

    contact_id: int
    aliases: int
    values: dict[str, int]
    idempotent_answers: int

    def report(self) -> dict[str, int]:
        return {
            "contact_id": self.contact_id,
            "aliases": self.aliases,
            **self.values,
            "idempotent_answers": self.idempotent_answers,
        }


async def erase_contact(
    lease: Lease, space_id: int, *, contact_id: int | None = None, email: str | None = None
) -> Erased:
    """Erase the contact an id names (an alias names its survivor), or the one that owns
    `email`; 404 when there is none."""

    async def work(connection: Connection) -> Erased:
        target = await _target(connection, space_id, contact_id, email)
        row = await contact_row(connection, space_id, target, lock=True)
        if row is None or row.merged_into_id is not None:
            raise Raced()  # merged or erased since it was named: name it again
        aliases = [
            alias.id
            for alias in await ALIASES.rows(
                connection, {"space_id": space_id, "contact_id": target}
            )
        ]
        ids = [target, *aliases]
        stored = await stored_values(connection, space_id, [target])
        for kind in KINDS:
            await DELETE_VALUES_OF[kind].run(connection, {"space_id": space_id, "ids": ids})
        forgotten = await FORGET_ANSWERS.rows(connection, {"space_id": space_id, "ids": ids})
        # The aliases first: they point at the contact.
        await DELETE_CONTACTS.run(connection, {"space_id": space_id, "ids": aliases})
        await DELETE_CONTACTS.run(connection, {"space_id": space_id, "ids": [target]})
        now = utcnow()
        fixed = {"space": space_id, "now": now}
        await INSERT_TOMBSTONES.run(connection, fixed, [(erased,) for erased in ids])
        await changes.record(connection, space_id, now, [(changes.ERASED, target, None)])
        counts = {kind: len(stored[kind]) for kind in KINDS}
        return Erased(target, len(aliases), counts, len(forgotten))

    return await attempts(lease, work)


async def _target(
    connection: Connection, space_id: int, contact_id: int | None, email: str | None
) -> int:
    if contact_id is not None:
        return (await resolve(connection, space_id, contact_id)).id
    assert email is not None
    owners = await owner_ids(connection, space_id, [normalise_email(email)])
    if not owners:
        raise NotFound("No contact with this email.")
    return owners[0]

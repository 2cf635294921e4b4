"""A create that brings nothing new to the one contact owning its emails (the "upsert on every
sign-in" client) is answered from reads alone: 200 with the contact as it stands, and nothing
written. `writes._unchanged` is that fast path; these tests hold it to the reference, the merge
on the writer (`writes.resolve_on_writer`), and to the tables it must leave alone."""

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from contactbase.contacts import writes
from contactbase.contacts.schemas import ContactCreate
from contactbase.db import Database, Lease
from tests.factories import (
    CONTACTS,
    SEED,
    add_contact,
    bearer,
    make_key,
    make_space,
    until_waiting_on_a_lock,
)

TABLES = ("contacts", "contact_emails", "contact_phones", "contact_names", "contact_locations")
WITH_SLOTS = {
    **SEED,
    "custom_fields": {
        "profile_field_1": "VIP",
        "profile_field_16": 3,
        "profile_field_26": "2026-11-26",
    },
}


async def every_row(db: Database) -> dict[str, list[Any]]:
    """All rows of the contact tables, timestamps and all."""
    async with db.reader() as session:
        return {
            table: [
                tuple(row)
                for row in await session.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))
            ]
            for table in TABLES
        }


RESENDS = [
    pytest.param(WITH_SLOTS, id="the same request"),
    pytest.param({"emails": ["JOHNNY@example.com "]}, id="one email, another case"),
    pytest.param({"emails": ["john@example.com"], "phones": ["+1 (234) 567-890"]}, id="a phone"),
    pytest.param({**SEED, "names": ["Johnny", "John Doe"]}, id="values in another order"),
    pytest.param(
        {"emails": ["john@example.com"], "custom_fields": {"profile_field_16": 3.0}},
        id="a slot as it is",
    ),
]


@pytest.mark.parametrize("resend", RESENDS)
async def test_a_resend_with_nothing_new_answers_the_contact_and_writes_nothing(
    client: httpx.AsyncClient, db: Database, resend: dict[str, Any]
) -> None:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    created = await add_contact(client, auth, WITH_SLOTS)
    before = await every_row(db)
    response = await client.post(CONTACTS, json=resend, headers=auth)
    assert response.status_code == 200, response.text
    got = await client.get(f"{CONTACTS}/{created['id']}", headers=auth)
    assert response.json() == got.json() == created
    assert await every_row(db) == before
    # The reference path answers the same, and writes nothing either.
    lease = Lease(db)
    try:
        payload = ContactCreate.model_validate(resend)
        reference = await writes.resolve_on_writer(lease, space_id, payload)
    finally:
        await lease.release()
    contact, was_created = reference
    assert (json.loads(contact.model_dump_json(exclude_unset=True)), was_created) == (
        created,
        False,
    )
    assert await every_row(db) == before


async def test_a_resend_with_nothing_new_takes_no_lock(
    app: FastAPI, client: httpx.AsyncClient, db: Database, is_postgres: bool
) -> None:
    """While another transaction holds what a merge would wait for (the contact's row on
    PostgreSQL, the single writer on SQLite), a re-send with nothing new is answered at once;
    one that brings a new value waits for it."""
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    created = await add_contact(client, auth, SEED)
    async with db.writer() as session, session.begin():
        lock = "SELECT id FROM contacts WHERE id = :id FOR UPDATE" if is_postgres else "SELECT 1"
        await session.execute(text(lock), {"id": created["id"]})
        resent = await asyncio.wait_for(client.post(CONTACTS, json=SEED, headers=auth), 10)
        assert resent.status_code == 200
        assert resent.json() == created
        new_name = {"emails": SEED["emails"], "names": ["Jo"]}
        merging = asyncio.create_task(client.post(CONTACTS, json=new_name, headers=auth))
        await until_waiting_on_a_lock(app, db)
        assert not merging.done()
    assert (await merging).json()["names"] == [*SEED["names"], "Jo"]


@pytest.mark.parametrize(
    "resend",
    [
        pytest.param({"emails": ["john@example.com", "new@example.com"]}, id="a new email"),
        pytest.param({"emails": ["john@example.com"], "names": ["Jon"]}, id="a new name"),
        pytest.param(
            {"emails": ["john@example.com"], "custom_fields": {"profile_field_1": "Lead"}},
            id="a slot changed",
        ),
        pytest.param(
            {"emails": ["john@example.com"], "custom_fields": {"profile_field_2": "x"}},
            id="a slot filled",
        ),
    ],
)
async def test_a_resend_with_something_new_merges_it(
    client: httpx.AsyncClient, db: Database, resend: dict[str, Any]
) -> None:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    created = await add_contact(client, auth, WITH_SLOTS)
    response = await client.post(CONTACTS, json=resend, headers=auth)
    assert response.status_code == 200, response.text
    merged = response.json()
    assert merged != created
    assert merged["updated_at"] >= created["updated_at"]
    got = await client.get(f"{CONTACTS}/{created['id']}", headers=auth)
    assert got.json() == merged


async def test_a_resend_naming_two_contacts_merges_them(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Each email is known, but to different contacts: never the fast path."""
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    first = await add_contact(client, auth, {"emails": ["a@example.com"]})
    second = await add_contact(client, auth, {"emails": ["b@example.com"]})
    response = await client.post(
        CONTACTS, json={"emails": ["b@example.com", "a@example.com"]}, headers=auth
    )
    assert response.status_code == 200
    assert response.json()["id"] == first["id"]
    assert response.json()["emails"] == ["a@example.com", "b@example.com"]
    alias = await client.get(f"{CONTACTS}/{second['id']}", headers=auth)
    assert alias.json()["id"] == first["id"]

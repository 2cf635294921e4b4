"""Concurrent creates: the unique (Space, email) constraint decides, and every race ends merged."""

import asyncio

import httpx
from fastapi import FastAPI

from contactbase.contacts.models import VALUE_TABLES, Contact
from contactbase.db import Database, utcnow
from tests.factories import (
    CONTACTS,
    bearer,
    make_key,
    make_space,
    make_tenant,
    until_waiting_on_a_lock,
)


async def test_parallel_creates_of_one_new_email_end_as_one_contact(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    responses = await asyncio.gather(
        *(
            client.post(
                CONTACTS, json={"emails": ["same@example.com"], "names": [f"N{n}"]}, headers=auth
            )
            for n in range(12)
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 11 + [201]
    ids = {response.json()["id"] for response in responses}
    assert len(ids) == 1
    contact = (await client.get(f"{CONTACTS}/{ids.pop()}", headers=auth)).json()
    assert contact["emails"] == ["same@example.com"]
    assert sorted(contact["names"]) == sorted(f"N{n}" for n in range(12))
    listed = (await client.get(CONTACTS, headers=auth)).json()
    assert len(listed["data"]) == 1


async def test_emails_in_opposite_orders_do_not_deadlock(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    bodies = [
        {"emails": ["x@example.com", "y@example.com"]},
        {"emails": ["y@example.com", "x@example.com"]},
    ] * 6
    responses = await asyncio.gather(*(client.post(CONTACTS, json=b, headers=auth) for b in bodies))
    assert sorted(r.status_code for r in responses) == [200] * 11 + [201]
    assert len({r.json()["id"] for r in responses}) == 1


async def test_overlapping_chain_merges_leave_one_contact(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    emails = [f"chain{n}@example.com" for n in range(10)]
    created = [
        (await client.post(CONTACTS, json={"emails": [email]}, headers=auth)).json()["id"]
        for email in emails
    ]
    links = [{"emails": [emails[n], emails[n + 1]]} for n in range(len(emails) - 1)]
    responses = await asyncio.gather(*(client.post(CONTACTS, json=b, headers=auth) for b in links))
    assert [r.status_code for r in responses] == [200] * len(links)
    listed = (await client.get(CONTACTS, headers=auth)).json()["data"]
    assert [item["id"] for item in listed] == [created[0]]
    survivor = (await client.get(f"{CONTACTS}/{created[0]}", headers=auth)).json()
    assert sorted(survivor["emails"]) == sorted(emails)
    assert survivor["emails"][0] == emails[0]
    for contact_id in created:
        alias = await client.get(f"{CONTACTS}/{contact_id}", headers=auth)
        assert alias.json()["id"] == created[0]


async def test_a_create_that_waits_on_an_uncommitted_owner_merges_into_it(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    """The create meets the email's unique index held by a transaction not yet committed: it
    waits, and once that commits, it merges instead of writing any of its own rows."""
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    async with db.writer() as session, session.begin():
        now = utcnow()
        owner = Contact(space_id=space_id, email="held@example.com", name="First")
        owner.created_at = owner.updated_at = now
        session.add(owner)
        await session.flush()
        for kind, value in (("emails", "held@example.com"), ("names", "First")):
            row = VALUE_TABLES[kind](space_id=space_id, contact_id=owner.id, position=0)
            row.value, row.normalised = value, value
            session.add(row)
        await session.flush()
        sent = {"emails": ["other@example.com", "held@example.com"], "names": ["Second"]}
        racing = asyncio.create_task(client.post(CONTACTS, json=sent, headers=auth))
        await until_waiting_on_a_lock(app, db)  # on the index (or, on SQLite, the write lock)
        assert not racing.done()
    response = await racing
    assert response.status_code == 200, response.text
    merged = response.json()
    assert merged["id"] == owner.id
    assert merged["emails"] == ["held@example.com", "other@example.com"]
    assert merged["names"] == ["First", "Second"]
    listed = (await client.get(CONTACTS, headers=auth)).json()
    assert [contact["id"] for contact in listed["data"]] == [owner.id]

"""GET /contacts/changes (SPEC 6.5): an event per committed change, ids and never values, in
`seq` order per Space; `after` and `limit`; retention and 410; and, with many writers
committing at once, a poller that misses nothing and sees nothing twice."""

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from contactbase.contacts import changes
from contactbase.contacts.models import ContactChange
from contactbase.db import Database, utcnow
from tests.factories import CONTACTS, answered, make_tenant

CHANGES = f"{CONTACTS}/changes"


async def feed(client: httpx.AsyncClient, auth: dict[str, str], after: int = 0) -> list[Any]:
    response = await client.get(CHANGES, params={"after": after, "limit": 1000}, headers=auth)
    assert response.status_code == 200, response.text
    return [
        (e["seq"], e["type"], e["contact_id"], e["merged_into"]) for e in response.json()["data"]
    ]


async def test_every_change_is_an_event_of_ids(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    ada = (await client.post(CONTACTS, json={"emails": ["ada@example.com"]}, headers=auth)).json()
    bob = (await client.post(CONTACTS, json={"emails": ["bob@example.com"]}, headers=auth)).json()
    # Nothing new: no event.
    await client.post(CONTACTS, json={"emails": ["ADA@example.com"]}, headers=auth)
    # Bob merged into Ada (the oldest), who gains a value.
    merged = await client.post(
        CONTACTS, json={"emails": ["bob@example.com", "ada@example.com"]}, headers=auth
    )
    assert merged.json()["id"] == ada["id"]
    await client.put(f"{CONTACTS}/{ada['id']}", json={"names": ["Ada"]}, headers=auth)
    batch = {
        "contacts": [
            {"emails": ["cy@example.com"]},
            {"emails": ["cy@example.com", "d@example.com"]},
        ]
    }
    cy = (await client.post(f"{CONTACTS}/batch", json=batch, headers=auth)).json()
    cy_id = cy["results"][0]["contact"]["id"]
    await client.delete(f"{CONTACTS}/{ada['id']}", headers=auth)
    assert await feed(client, auth) == [
        (1, "contact.created", ada["id"], None),
        (2, "contact.created", bob["id"], None),
        (3, "contact.merged", bob["id"], ada["id"]),
        (4, "contact.updated", ada["id"], None),
        (5, "contact.updated", ada["id"], None),
        (6, "contact.created", cy_id, None),
        (7, "contact.erased", ada["id"], None),
    ]
    event = (await client.get(CHANGES, headers=auth)).json()["data"][0]
    assert set(event) == {"seq", "type", "contact_id", "merged_into", "occurred_at"}
    assert event["occurred_at"].endswith("Z")


async def test_after_and_limit_page_through_the_feed(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    for n in range(5):
        await client.post(CONTACTS, json={"emails": [f"p{n}@example.com"]}, headers=auth)
    first = (await client.get(CHANGES, params={"limit": 2}, headers=auth)).json()
    assert [e["seq"] for e in first["data"]] == [1, 2]
    assert first["next_after"] == 2
    rest = (await client.get(CHANGES, params={"after": 2}, headers=auth)).json()
    assert [e["seq"] for e in rest["data"]] == [3, 4, 5]
    empty = (await client.get(CHANGES, params={"after": 5}, headers=auth)).json()
    assert empty == {"data": [], "next_after": 5}
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": "x"}):
        refused = await client.get(CHANGES, params=bad, headers=auth)
        assert refused.status_code == 422
        assert list(answered(refused)["errors"]) == list(bad)


async def test_each_space_has_its_own_feed(client: httpx.AsyncClient, db: Database) -> None:
    one, two = await make_tenant(db, "One"), await make_tenant(db, "Two")
    await client.post(CONTACTS, json={"emails": ["a@example.com"]}, headers=one)
    theirs = (await client.post(CONTACTS, json={"emails": ["a@example.com"]}, headers=two)).json()
    assert await feed(client, two) == [(1, "contact.created", theirs["id"], None)]
    assert len(await feed(client, one)) == 1


async def test_events_past_their_retention_answer_410(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    for n in range(4):
        await client.post(CONTACTS, json={"emails": [f"p{n}@example.com"]}, headers=auth)
    assert len(await feed(client, auth)) == 4  # read: numbered
    async with db.writer() as session, session.begin():
        old = utcnow() - timedelta(days=31)
        await session.execute(
            update(ContactChange).where(ContactChange.seq <= 2).values(occurred_at=old)
        )
    await changes.sweep(db, 30 * 24 * 3600)
    expired = await client.get(CHANGES, params={"after": 1}, headers=auth)
    assert expired.status_code == 410
    assert answered(expired)["oldest_after"] == 2
    assert [seq for seq, *_ in await feed(client, auth, after=2)] == [3, 4]
    await client.post(CONTACTS, json={"emails": ["later@example.com"]}, headers=auth)
    assert [seq for seq, *_ in await feed(client, auth, after=2)] == [3, 4, 5]


async def test_pollers_miss_nothing_and_see_nothing_twice_while_writers_commit(
    client: httpx.AsyncClient, db: Database, is_postgres: bool
) -> None:
    """16 writers create contacts at once (12 single creates each, a transaction of one
    statement, or 3 batches of 4 in a transaction each: commits of every length, in any order),
    while two pollers follow the feed with `after`, each numbering what it finds; then each
    reads to the end. Each saw the created ids exactly once, in increasing seq."""
    if not is_postgres:
        pytest.skip("concurrent commits: PostgreSQL (SQLite's one writer commits in turn)")
    auth = await make_tenant(db)
    created: list[int] = []
    writing = True

    async def writer(n: int) -> None:
        if n % 4:
            for m in range(12):
                body = {"emails": [f"w{n}-{m}@example.com"]}
                response = await client.post(CONTACTS, json=body, headers=auth)
                assert response.status_code == 201
                created.append(response.json()["id"])
            return
        for m in range(3):
            items = [{"emails": [f"b{n}-{m}-{k}@example.com"]} for k in range(4)]
            response = await client.post(
                f"{CONTACTS}/batch", json={"contacts": items}, headers=auth
            )
            assert response.status_code == 200
            created.extend(result["contact"]["id"] for result in response.json()["results"])

    async def poller(seen: list[tuple[int, int]]) -> None:
        async def poll(after: int) -> int:
            params = {"after": after, "limit": 7}
            page = (await client.get(CHANGES, params=params, headers=auth)).json()
            seen.extend((e["seq"], e["contact_id"]) for e in page["data"])
            return int(page["next_after"])

        after = 0
        while writing:
            after = await poll(after)
        while (following := await poll(after)) != after:
            after = following

    seen: list[list[tuple[int, int]]] = [[], []]
    polling = [asyncio.ensure_future(poller(one)) for one in seen]
    await asyncio.gather(*(writer(n) for n in range(16)))
    writing = False
    await asyncio.gather(*polling)
    assert len(created) == 16 * 12
    for one in seen:
        seqs = [seq for seq, _ in one]
        assert seqs == list(range(1, len(created) + 1))
        assert sorted(contact for _, contact in one) == sorted(created)

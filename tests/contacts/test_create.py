"""POST /contacts: creating, merging (identity resolution) and on_conflict=error."""

import httpx

from contactbase.db import Database
from tests.factories import CONTACTS, SEED, answered, make_tenant


async def test_seed_example_creates_a_contact(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    response = await client.post(CONTACTS, json=SEED, headers=auth)
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": 1,
        **SEED,
        "created_at": body["created_at"],
        "updated_at": body["created_at"],
    }
    assert len(body["created_at"]) == 20
    assert body["created_at"].endswith("Z")
    fetched = await client.get(f"{CONTACTS}/1", headers=auth)
    assert answered(fetched) == body


async def test_known_email_merges_and_appends(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    await client.post(CONTACTS, json=SEED, headers=auth)
    response = await client.post(
        CONTACTS,
        json={
            "emails": [" JOHN@Example.com ", "j@example.org"],
            "phones": ["+1 (234) 567-890"],
            "names": ["Jon"],
        },
        headers=auth,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == 1
    assert body["emails"] == ["john@example.com", "johnny@example.com", "j@example.org"]
    assert body["phones"] == SEED["phones"]  # same digits as +1234567890: not added
    assert body["names"] == ["John Doe", "Johnny", "Jon"]


async def test_two_contacts_merge_into_the_oldest(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    first = (
        await client.post(
            CONTACTS, json={"emails": ["a@example.com"], "names": ["A"]}, headers=auth
        )
    ).json()
    second = (
        await client.post(
            CONTACTS,
            json={"emails": ["b@example.com"], "phones": ["5551234"], "names": ["B"]},
            headers=auth,
        )
    ).json()
    merged = await client.post(
        CONTACTS,
        json={"emails": ["b@example.com", "a@example.com", "c@example.com"]},
        headers=auth,
    )
    assert merged.status_code == 200
    assert merged.json()["id"] == first["id"]
    assert merged.json()["emails"] == ["a@example.com", "b@example.com", "c@example.com"]
    assert merged.json()["phones"] == ["5551234"]  # the survivor had none: filled
    assert merged.json()["names"] == ["A", "B"]
    alias = await client.get(f"{CONTACTS}/{second['id']}", headers=auth)
    assert alias.status_code == 200
    assert answered(alias) == merged.json()
    listed = (await client.get(CONTACTS, headers=auth)).json()
    assert [item["id"] for item in listed["data"]] == [first["id"]]
    assert listed["data"][0]["phone"] == "5551234"


async def test_on_conflict_error_refuses_and_changes_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    await client.post(CONTACTS, json={"emails": ["a@example.com"]}, headers=auth)
    await client.post(CONTACTS, json={"emails": ["b@example.com"]}, headers=auth)
    response = await client.post(
        f"{CONTACTS}?on_conflict=error",
        json={"emails": ["new@example.com", "B@example.com", "a@example.com"], "names": ["X"]},
        headers=auth,
    )
    assert response.status_code == 409
    assert answered(response) == {
        "message": "A contact with one of these emails already exists (id 1).",
        "existing_contact_id": 1,
    }
    first = (await client.get(f"{CONTACTS}/1", headers=auth)).json()
    assert first["emails"] == ["a@example.com"]
    assert first["names"] == []
    new = await client.get(f"{CONTACTS}?email=new@example.com", headers=auth)
    assert new.json()["data"] == []

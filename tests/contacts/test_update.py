"""PUT /contacts/{id}: sparse replace per collection, refusals that change nothing, aliases,
identity moving with the emails, and concurrent writers that never leave a mixture."""

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from contactbase.db import Database
from tests.factories import CONTACTS, SEED, answered, bearer, make_key, make_space, make_tenant

Client = httpx.AsyncClient
Auth = dict[str, str]
Json = dict[str, Any]
NOTHING_SENT = "At least one of emails, phones, names, locations or custom_fields is required."


async def create(client: Client, auth: Auth, body: Json) -> Json:
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code in (200, 201), response.text
    created: Json = response.json()
    return created


async def put(client: Client, auth: Auth, contact_id: int | str, body: Any) -> httpx.Response:
    return await client.put(f"{CONTACTS}/{contact_id}", json=body, headers=auth)


async def fetch(client: Client, auth: Auth, contact_id: int) -> Json:
    response = await client.get(f"{CONTACTS}/{contact_id}", headers=auth)
    assert response.status_code == 200, response.text
    contact: Json = response.json()
    return contact


async def listed(client: Client, auth: Auth, **query: str) -> list[Json]:
    response = await client.get(CONTACTS, params=query, headers=auth)
    assert response.status_code == 200, response.text
    data: list[Json] = response.json()["data"]
    return data


def values(contact: Json) -> Json:
    """The four collections of a ContactDetail."""
    return {kind: contact[kind] for kind in ("emails", "phones", "names", "locations")}


def summary(
    contact_id: int, email: str, name: str | None, phone: str | None, location: str | None
) -> Json:
    """A row of the list: the primary values."""
    return {"id": contact_id, "email": email, "name": name, "phone": phone, "location": location}


def one_error(field: str, message: str) -> Json:
    return {"message": message, "errors": {field: [message]}}


@pytest.fixture
async def auth(db: Database) -> Auth:
    return await make_tenant(db)


async def test_each_field_sent_replaces_its_collection(client: Client, auth: Auth) -> None:
    seed = await create(client, auth, SEED)
    body = {"phones": ["555-0100", "+44 20 7946 0958"], "names": ["Jane"]}
    response = await put(client, auth, 1, body)
    assert response.status_code == 200
    assert answered(response) == {"id": 1, **body}
    contact = await fetch(client, auth, 1)
    assert values(contact) == {
        "emails": SEED["emails"],
        "phones": ["555-0100", "+44 20 7946 0958"],
        "names": ["Jane"],
        "locations": SEED["locations"],
    }
    assert contact["created_at"] == seed["created_at"]
    assert await listed(client, auth) == [
        summary(1, "john@example.com", "Jane", "555-0100", "New York, NY")
    ]


async def test_every_collection_replaced_with_new_primaries(client: Client, auth: Auth) -> None:
    await create(client, auth, SEED)
    body = {
        "emails": ["jane@example.org", "john@example.com"],
        "phones": ["+33 1 23 45 67 89"],
        "names": ["Jane Roe", "John Doe"],
        "locations": ["Paris", "New York, NY"],
    }
    response = await put(client, auth, 1, body)
    assert response.status_code == 200
    assert answered(response) == {"id": 1, **body}
    assert values(await fetch(client, auth, 1)) == body
    assert await listed(client, auth) == [
        summary(1, "jane@example.org", "Jane Roe", "+33 1 23 45 67 89", "Paris")
    ]


async def test_empty_arrays_clear_and_primaries_become_null(client: Client, auth: Auth) -> None:
    await create(client, auth, SEED)
    response = await put(client, auth, 1, {"phones": [], "names": [], "locations": []})
    assert response.status_code == 200
    assert answered(response) == {"id": 1, "phones": [], "names": [], "locations": []}
    contact = await fetch(client, auth, 1)
    assert values(contact) == {"emails": SEED["emails"], "phones": [], "names": [], "locations": []}
    assert await listed(client, auth) == [summary(1, "john@example.com", None, None, None)]


async def test_values_are_trimmed_and_repeats_dropped(client: Client, auth: Auth) -> None:
    await create(client, auth, SEED)
    body = {
        "emails": [" New@Example.com ", "new@example.com", "other@example.com", "NEW@EXAMPLE.COM"],
        "phones": [" +1 234 567 890 ", "1234567890", "(555) 123-4567"],
        "names": [" Ann ", "Ann", "ann"],
        "locations": ["Rome ", " Rome"],
    }
    stored = {
        "emails": ["New@Example.com", "other@example.com"],
        "phones": ["+1 234 567 890", "(555) 123-4567"],
        "names": ["Ann", "ann"],
        "locations": ["Rome"],
    }
    response = await put(client, auth, 1, body)
    assert response.status_code == 200
    assert answered(response) == {"id": 1, **stored}
    assert values(await fetch(client, auth, 1)) == stored


async def test_own_email_may_change_case(client: Client, auth: Auth) -> None:
    await create(client, auth, SEED)
    response = await put(client, auth, 1, {"emails": ["JOHN@EXAMPLE.COM", "johnny@example.com"]})
    assert response.status_code == 200
    assert answered(response) == {"id": 1, "emails": ["JOHN@EXAMPLE.COM", "johnny@example.com"]}
    assert (await fetch(client, auth, 1))["emails"] == ["JOHN@EXAMPLE.COM", "johnny@example.com"]
    found = await listed(client, auth, email="john@example.com")
    assert [item["id"] for item in found] == [1]


async def test_emails_of_other_contacts_are_refused_and_nothing_changes(
    client: Client, auth: Auth
) -> None:
    await create(client, auth, SEED)
    await create(client, auth, {"emails": ["b@example.com"]})
    await create(client, auth, {"emails": ["c@example.com"]})
    before = [await fetch(client, auth, n) for n in (1, 2, 3)]
    response = await put(
        client,
        auth,
        1,
        {"emails": ["C@example.com", "new@example.com", " b@EXAMPLE.com"], "names": ["Changed"]},
    )
    assert response.status_code == 422
    first = 'The emails.0 field ("C@example.com") already belongs to contact 3.'
    second = 'The emails.2 field ("b@EXAMPLE.com") already belongs to contact 2.'
    assert answered(response) == {
        "message": f"{first} (and 1 more error)",
        "errors": {"emails.0": [first], "emails.2": [second]},
        "existing_contact_id": 2,
    }
    assert [await fetch(client, auth, n) for n in (1, 2, 3)] == before
    assert await listed(client, auth, email="new@example.com") == []


async def test_email_of_a_contact_in_another_space_is_allowed(
    client: Client, db: Database, auth: Auth
) -> None:
    other = await make_tenant(db, name="Other")
    theirs = await create(client, other, {"emails": ["shared@example.com"], "names": ["Theirs"]})
    ours = await create(client, auth, {"emails": ["mine@example.com"]})
    response = await put(client, auth, ours["id"], {"emails": ["Shared@example.com"]})
    assert response.status_code == 200
    assert answered(response) == {"id": ours["id"], "emails": ["Shared@example.com"]}
    assert [c["id"] for c in await listed(client, auth, email="shared@example.com")] == [ours["id"]]
    assert await fetch(client, other, theirs["id"]) == theirs


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "body", NOTHING_SENT),
        ({"emails": []}, "emails", "The emails field must have at least 1 item(s) ([])."),
        ({"emails": None}, "emails", "The emails field must not be null."),
        ({"phones": None}, "phones", "The phones field must not be null."),
        ({"names": None}, "names", "The names field must not be null."),
        ({"locations": None}, "locations", "The locations field must not be null."),
        ({"custom_fields": None}, "custom_fields", "The custom_fields field must not be null."),
        ({"phone": ["+1234567890"]}, "phone", "The phone field is not allowed."),
        ({"id": 2, "names": ["X"]}, "id", "The id field is not allowed."),
        ([], "body", "The request body must be a JSON object."),
    ],
)
async def test_refused_bodies_change_nothing(
    client: Client, auth: Auth, body: Any, field: str, message: str
) -> None:
    await create(client, auth, SEED)
    before = await fetch(client, auth, 1)
    response = await put(client, auth, 1, body)
    assert response.status_code == 422
    assert answered(response) == one_error(field, message)
    assert await fetch(client, auth, 1) == before


async def test_unknown_ids_and_bad_paths(client: Client, db: Database, auth: Auth) -> None:
    await create(client, auth, SEED)
    other = await make_tenant(db, name="Other")
    foreign = await create(client, other, {"emails": ["x@example.com"]})
    body = {"names": ["X"]}
    unknown = await put(client, auth, 999, body)
    assert (unknown.status_code, answered(unknown)) == (404, {"message": "No contact with id 999."})
    response = await put(client, auth, foreign["id"], body)
    assert response.status_code == 404
    assert answered(response) == {"message": f"No contact with id {foreign['id']}."}
    bad = await put(client, auth, "abc", body)
    assert bad.status_code == 422
    assert answered(bad) == one_error("id", 'The id field must be a positive integer ("abc").')
    query = await client.put(f"{CONTACTS}/1?foo=1", json=body, headers=auth)
    assert query.status_code == 422
    assert answered(query) == one_error("foo", "The foo field is not allowed.")
    assert (await fetch(client, other, foreign["id"]))["names"] == []
    assert (await fetch(client, auth, 1))["names"] == SEED["names"]


async def test_read_only_key_is_forbidden(client: Client, db: Database) -> None:
    space_id = await make_space(db)
    writer = bearer(await make_key(db, space_id))
    reader = bearer(await make_key(db, space_id, ["contacts:read"]))
    await create(client, writer, SEED)
    response = await put(client, reader, 1, {"names": ["X"]})
    assert response.status_code == 403
    assert answered(response) == {"message": "This API key lacks the contacts:write permission."}
    assert (await fetch(client, reader, 1))["names"] == SEED["names"]


async def test_alias_id_updates_the_survivor(client: Client, auth: Auth) -> None:
    survivor = await create(client, auth, {"emails": ["a@example.com"], "names": ["A"]})
    alias = await create(client, auth, {"emails": ["b@example.com"], "names": ["B"]})
    await create(client, auth, {"emails": ["b@example.com", "a@example.com"]})
    response = await put(client, auth, alias["id"], {"names": ["Merged"]})
    assert response.status_code == 200
    assert answered(response) == {"id": survivor["id"], "names": ["Merged"]}
    contact = await fetch(client, auth, survivor["id"])
    assert values(contact) == {
        "emails": ["a@example.com", "b@example.com"],
        "phones": [],
        "names": ["Merged"],
        "locations": [],
    }
    assert await fetch(client, auth, alias["id"]) == contact
    assert [item["id"] for item in await listed(client, auth)] == [survivor["id"]]


async def test_updated_at_moves_forward_and_created_at_stays(
    client: Client, db: Database, auth: Auth
) -> None:
    await create(client, auth, SEED)
    past = datetime(2020, 1, 2, 3, 4, 5)
    async with db.writer() as session, session.begin():
        await session.execute(
            text("UPDATE contacts SET created_at = :t, updated_at = :t"), {"t": past}
        )
    start = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    response = await put(client, auth, 1, {"names": ["X"]})
    end = datetime.now(UTC).replace(tzinfo=None)
    assert response.status_code == 200
    contact = await fetch(client, auth, 1)
    assert contact["created_at"] == "2020-01-02T03:04:05Z"
    updated = datetime.strptime(contact["updated_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert start <= updated <= end


async def test_replaced_emails_no_longer_identify_the_contact(client: Client, auth: Auth) -> None:
    await create(client, auth, SEED)
    await put(client, auth, 1, {"emails": ["new@example.com"]})
    old = await client.post(CONTACTS, json={"emails": ["John@example.com"]}, headers=auth)
    assert old.status_code == 201
    assert old.json()["id"] == 2
    assert old.json()["emails"] == ["John@example.com"]
    new = await client.post(
        CONTACTS, json={"emails": ["NEW@example.com"], "names": ["Newer"]}, headers=auth
    )
    assert new.status_code == 200
    assert values(new.json()) == {
        "emails": ["new@example.com"],
        "phones": SEED["phones"],
        "names": [*SEED["names"], "Newer"],
        "locations": SEED["locations"],
    }
    assert new.json()["id"] == 1


def full_body(n: int) -> Json:
    """A body replacing everything, every value tagged with `n`."""
    return {
        "emails": [f"p{n}@example.com", f"q{n}@example.com"],
        "phones": [f"+1 555 000 {n:04d}"],
        "names": [f"Name {n}", f"Alias {n}"],
        "locations": [f"City {n}"],
        "custom_fields": {"profile_field_1": f"v{n}", "profile_field_16": n},
    }


async def rows_per_contact(db: Database, table: str) -> list[tuple[int, int]]:
    async with db.reader() as session:
        result = await session.execute(
            text(
                f"SELECT contact_id, count(*) FROM {table} GROUP BY contact_id ORDER BY contact_id"
            )
        )
        return [(row[0], row[1]) for row in result]


async def test_concurrent_full_replacements_never_mix(
    client: Client, db: Database, auth: Auth
) -> None:
    await create(client, auth, SEED)
    responses = await asyncio.gather(*(put(client, auth, 1, full_body(n)) for n in range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert [r.json() for r in responses] == [{"id": 1, **full_body(n)} for n in range(10)]
    contact = await fetch(client, auth, 1)
    winner = int(contact["names"][0].removeprefix("Name "))
    expected = full_body(winner)
    assert {**values(contact), "custom_fields": contact["custom_fields"]} == expected
    primaries = (f"p{winner}@example.com", f"Name {winner}", f"+1 555 000 {winner:04d}")
    assert await listed(client, auth) == [summary(1, *primaries, f"City {winner}")]
    counts = {"contact_emails": 2, "contact_names": 2, "contact_phones": 1, "contact_locations": 1}
    for table, count in counts.items():
        assert await rows_per_contact(db, table) == [(1, count)]


async def race(
    update: Awaitable[httpx.Response], create: Awaitable[httpx.Response], round_number: int
) -> tuple[httpx.Response, httpx.Response]:
    """Both requests at once, started in turn update-first and create-first."""
    if round_number % 2:
        posted, replaced = await asyncio.gather(create, update)
    else:
        replaced, posted = await asyncio.gather(update, create)
    return replaced, posted


def collections(emails: list[str], phones: list[str], names: list[str]) -> Json:
    return {"emails": emails, "phones": phones, "names": names, "locations": []}


async def test_update_racing_a_merging_create_stays_consistent(client: Client, auth: Auth) -> None:
    original_phone = "+1 000 000 0000"
    for r in range(10):
        email, phone = f"race{r}@example.com", f"+1 999 000 {r:04d}"
        body = {"emails": [email], "names": ["Original"], "phones": [original_phone]}
        contact_id = (await create(client, auth, body))["id"]
        replaced, merged = await race(
            put(client, auth, contact_id, {"names": [f"Put {r}"]}),
            client.post(
                CONTACTS,
                json={"emails": [email], "names": [f"Post {r}"], "phones": [phone]},
                headers=auth,
            ),
            r,
        )
        assert (replaced.status_code, merged.status_code) == (200, 200)
        assert answered(replaced) == {"id": contact_id, "names": [f"Put {r}"]}
        assert merged.json()["id"] == contact_id
        contact = values(await fetch(client, auth, contact_id))
        # The update either came last (its names alone) or first (the create appended to it).
        assert contact in (
            collections([email], [original_phone, phone], [f"Put {r}"]),
            collections([email], [original_phone, phone], [f"Put {r}", f"Post {r}"]),
        )
        found = await listed(client, auth, email=email)
        assert [(s["id"], s["name"], s["phone"]) for s in found] == [
            (contact_id, f"Put {r}", original_phone)
        ]


async def test_email_replacement_racing_a_create_with_the_old_email(
    client: Client, auth: Auth
) -> None:
    for r in range(10):
        old, moved = f"old{r}@example.com", f"moved{r}@example.com"
        contact_id = (await create(client, auth, {"emails": [old], "names": ["Original"]}))["id"]
        replaced, posted = await race(
            put(client, auth, contact_id, {"emails": [moved], "names": [f"Put {r}"]}),
            client.post(CONTACTS, json={"emails": [old], "names": [f"Post {r}"]}, headers=auth),
            r,
        )
        assert replaced.status_code == 200
        assert answered(replaced) == {"id": contact_id, "emails": [moved], "names": [f"Put {r}"]}
        contact = values(await fetch(client, auth, contact_id))
        assert contact == collections([moved], [], [f"Put {r}"])
        if posted.status_code == 200:  # merged before the update took the email away
            assert posted.json()["id"] == contact_id
            assert await listed(client, auth, email=old) == []
        else:  # after it: the old email was free, so it made a new contact
            assert posted.status_code == 201
            created = await fetch(client, auth, posted.json()["id"])
            assert values(created) == collections([old], [], [f"Post {r}"])
            owners = await listed(client, auth, email=old)
            assert [item["id"] for item in owners] == [created["id"]]
        assert [item["id"] for item in await listed(client, auth, email=moved)] == [contact_id]

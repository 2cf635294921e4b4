"""GET /contacts/{id}: the ContactDetail, tenant isolation, id parsing, aliases and options."""

import re
from typing import Any

import httpx
import pytest

from contactbase.db import Database
from tests.factories import CONTACTS, SEED, add_contact, answered, make_tenant

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def not_found(contact_id: str) -> dict[str, str]:
    return {"message": f"No contact with id {contact_id}."}


def bad_id(shown: str) -> dict[str, Any]:
    message = f"The id field must be a positive integer ({shown})."
    return {"message": message, "errors": {"id": [message]}}


async def test_returns_the_full_contact_detail(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    created = await add_contact(client, auth, SEED)
    response = await client.get(f"{CONTACTS}/{created['id']}", headers=auth)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": created["id"],
        "emails": ["john@example.com", "johnny@example.com"],
        "phones": ["+1234567890", "+0987654321"],
        "names": ["John Doe", "Johnny"],
        "locations": ["New York, NY", "Los Angeles, CA"],
        "created_at": created["created_at"],
        "updated_at": created["updated_at"],
    }
    assert TIMESTAMP.fullmatch(body["created_at"])
    assert TIMESTAMP.fullmatch(body["updated_at"])


async def test_empty_collections_are_empty_arrays(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    created = await add_contact(client, auth, {"emails": ["solo@example.com"]})
    body = (await client.get(f"{CONTACTS}/{created['id']}", headers=auth)).json()
    assert body == {
        "id": created["id"],
        "emails": ["solo@example.com"],
        "phones": [],
        "names": [],
        "locations": [],
        "created_at": created["created_at"],
        "updated_at": created["updated_at"],
    }


async def test_primary_stays_first_after_values_are_appended(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    created = await add_contact(client, auth, SEED)
    await add_contact(
        client,
        auth,
        {
            "emails": ["new@example.com", "JOHNNY@example.com"],
            "phones": ["555-0100"],
            "names": ["Jack"],
            "locations": ["Boston, MA"],
        },
    )
    body = (await client.get(f"{CONTACTS}/{created['id']}", headers=auth)).json()
    assert body["id"] == created["id"]
    assert body["emails"] == ["john@example.com", "johnny@example.com", "new@example.com"]
    assert body["phones"] == ["+1234567890", "+0987654321", "555-0100"]
    assert body["names"] == ["John Doe", "Johnny", "Jack"]
    assert body["locations"] == ["New York, NY", "Los Angeles, CA", "Boston, MA"]


async def test_contact_of_another_space_is_not_found(
    client: httpx.AsyncClient, db: Database
) -> None:
    space_a = await make_tenant(db, "A")
    space_b = await make_tenant(db, "B")
    own = await add_contact(client, space_a, {"emails": ["a@example.com"]})
    foreign = await add_contact(client, space_b, SEED)
    response = await client.get(f"{CONTACTS}/{foreign['id']}", headers=space_a)
    assert response.status_code == 404
    assert answered(response) == not_found(str(foreign["id"]))
    # An id that exists nowhere gets the same answer: the 404 does not reveal existence.
    unknown = foreign["id"] + 100
    missing = await client.get(f"{CONTACTS}/{unknown}", headers=space_a)
    assert missing.status_code == 404
    assert answered(missing) == not_found(str(unknown))
    # Each Space still sees its own contact.
    assert (await client.get(f"{CONTACTS}/{own['id']}", headers=space_a)).status_code == 200
    theirs = await client.get(f"{CONTACTS}/{foreign['id']}", headers=space_b)
    assert theirs.status_code == 200
    assert theirs.json()["emails"] == SEED["emails"]
    mine = await client.get(f"{CONTACTS}/{own['id']}", headers=space_b)
    assert mine.status_code == 404
    assert answered(mine) == not_found(str(own["id"]))


async def test_alias_of_another_space_is_not_found(client: httpx.AsyncClient, db: Database) -> None:
    space_a = await make_tenant(db, "A")
    space_b = await make_tenant(db, "B")
    await add_contact(client, space_a, {"emails": ["a@example.com"]})
    first = await add_contact(client, space_b, {"emails": ["x@example.com"]})
    second = await add_contact(client, space_b, {"emails": ["y@example.com"]})
    await add_contact(client, space_b, {"emails": ["x@example.com", "y@example.com"]})
    for contact_id in (first["id"], second["id"]):
        response = await client.get(f"{CONTACTS}/{contact_id}", headers=space_a)
        assert response.status_code == 404
        assert answered(response) == not_found(str(contact_id))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("abc", '"abc"'),
        ("0", '"0"'),
        ("000", '"000"'),
        ("-1", '"-1"'),
        ("1.5", '"1.5"'),
        ("1e3", '"1e3"'),
        ("%20", '" "'),
        ("١٢", '"١٢"'),
        ("²", '"²"'),
    ],
)
async def test_id_that_is_not_a_positive_integer_is_422(
    client: httpx.AsyncClient, db: Database, raw: str, shown: str
) -> None:
    auth = await make_tenant(db)
    await add_contact(client, auth, {"emails": ["a@example.com"]})
    response = await client.get(f"{CONTACTS}/{raw}", headers=auth)
    assert response.status_code == 422
    assert answered(response) == bad_id(shown)


@pytest.mark.parametrize("raw", ["99999999999999999999999", "9" * 5000, "9223372036854775808"])
async def test_integer_too_large_to_exist_is_404(
    client: httpx.AsyncClient, db: Database, raw: str
) -> None:
    auth = await make_tenant(db)
    await add_contact(client, auth, {"emails": ["a@example.com"]})
    response = await client.get(f"{CONTACTS}/{raw}", headers=auth)
    assert response.status_code == 404
    body = answered(response)
    assert list(body) == ["message"]
    assert body["message"].startswith("No contact with id ")


async def test_largest_id_is_an_ordinary_unknown_id(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    largest = str(2**63 - 1)
    response = await client.get(f"{CONTACTS}/{largest}", headers=auth)
    assert response.status_code == 404
    assert answered(response) == not_found(largest)


async def test_leading_zeros_name_the_same_contact(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    created = await add_contact(client, auth, {"emails": ["a@example.com"]})
    response = await client.get(f"{CONTACTS}/000{created['id']}", headers=auth)
    assert response.status_code == 200
    assert response.json()["id"] == created["id"]


async def test_alias_id_resolves_to_the_survivor(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    first = await add_contact(client, auth, {"emails": ["a@example.com"], "names": ["A"]})
    second = await add_contact(
        client, auth, {"emails": ["b@example.com"], "phones": ["+1234567890"], "names": ["B"]}
    )
    merged = await client.post(
        CONTACTS, json={"emails": ["a@example.com", "b@example.com"]}, headers=auth
    )
    assert merged.status_code == 200
    assert merged.json()["id"] == first["id"]
    alias = await client.get(f"{CONTACTS}/{second['id']}", headers=auth)
    assert alias.status_code == 200
    assert answered(alias) == {
        "id": first["id"],
        "emails": ["a@example.com", "b@example.com"],
        "phones": ["+1234567890"],
        "names": ["A", "B"],
        "locations": [],
        "created_at": first["created_at"],
        "updated_at": merged.json()["updated_at"],
    }
    survivor = await client.get(f"{CONTACTS}/{first['id']}", headers=auth)
    assert answered(survivor) == alias.json()


async def test_alias_of_an_alias_resolves_to_the_final_survivor(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    first = await add_contact(client, auth, {"emails": ["a@example.com"]})
    second = await add_contact(client, auth, {"emails": ["b@example.com"]})
    third = await add_contact(client, auth, {"emails": ["c@example.com"]})
    await add_contact(client, auth, {"emails": ["b@example.com", "c@example.com"]})
    await add_contact(client, auth, {"emails": ["a@example.com", "c@example.com"]})
    for contact_id in (first["id"], second["id"], third["id"]):
        response = await client.get(f"{CONTACTS}/{contact_id}", headers=auth)
        assert response.status_code == 200
        assert response.json()["id"] == first["id"]
        assert response.json()["emails"] == ["a@example.com", "b@example.com", "c@example.com"]


@pytest.mark.parametrize(
    ("query", "added"),
    [
        ("include_comet_tokens=1", {"comet_tokens": []}),
        ("include_events=1", {"events": []}),
        ("include_browsing_session_data=1", {"browsing_session_hits": []}),
        (
            "include_comet_tokens=true&include_events=1&include_browsing_session_data=1",
            {"comet_tokens": [], "events": [], "browsing_session_hits": []},
        ),
        ("include_comet_tokens=0&include_events=false", {}),
        ("hide_direct_touchpoints=0&use_custom_field_labels=1", {}),
    ],
)
async def test_cometly_options_add_empty_arrays(
    client: httpx.AsyncClient, db: Database, query: str, added: dict[str, list[Any]]
) -> None:
    auth = await make_tenant(db)
    created = await add_contact(client, auth, SEED)
    plain = await client.get(f"{CONTACTS}/{created['id']}", headers=auth)
    assert plain.status_code == 200
    assert set(plain.json()) == {
        "id",
        "emails",
        "phones",
        "names",
        "locations",
        "created_at",
        "updated_at",
    }
    response = await client.get(f"{CONTACTS}/{created['id']}?{query}", headers=auth)
    assert response.status_code == 200
    assert answered(response) == {**plain.json(), **added}


async def test_unknown_query_parameter_is_422(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    created = await add_contact(client, auth, SEED)
    response = await client.get(f"{CONTACTS}/{created['id']}?include_everything=1", headers=auth)
    assert response.status_code == 422
    message = "The include_everything field is not allowed."
    assert answered(response) == {"message": message, "errors": {"include_everything": [message]}}


async def test_option_that_is_not_a_flag_is_422(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    created = await add_contact(client, auth, SEED)
    response = await client.get(f"{CONTACTS}/{created['id']}?include_events=maybe", headers=auth)
    assert response.status_code == 422
    message = 'The include_events field must be 1, 0, true or false ("maybe").'
    assert answered(response) == {"message": message, "errors": {"include_events": [message]}}


async def test_without_a_key_is_401(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    created = await add_contact(client, auth, SEED)
    response = await client.get(f"{CONTACTS}/{created['id']}")
    assert response.status_code == 401
    assert answered(response) == {"message": "Unauthenticated."}

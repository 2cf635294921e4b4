"""A contact holds at most MAX_VALUES values per collection (SPEC 6.8): a create, merge or batch
item that would grow one past it is a 422 naming the collection, and nothing changes; values
count once by normal form; PUT cannot pass it; an import lists the refused row."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from contactbase.contacts import merging
from contactbase.contacts.merging import MAX_VALUES
from contactbase.contacts.schemas import MAX_ITEMS
from contactbase.db import Database
from tests.factories import CONTACTS, answered, bearer, make_key, make_space, table_counts
from tests.test_import import Importer, rejects_of

BATCH = f"{CONTACTS}/batch"


@pytest.fixture
def importer(database_url: str, db: Database) -> Importer:
    return Importer(database_url)


def values(kind: str, start: int, count: int) -> list[str]:
    """`count` distinct values of a collection, numbered from `start`."""
    numbers = range(start, start + count)
    if kind == "emails":
        return [f"v{number}@example.com" for number in numbers]
    if kind == "phones":
        return [f"+1 555 {number:07d}" for number in numbers]
    return [f"{kind[:-1].title()} {number}" for number in numbers]


def refusal(kind: str, count: int, contact: int | str) -> str:
    into = f"contact {contact}" if isinstance(contact, int) else contact
    return (
        f"The {kind} field would hold {count:,} values once merged into {into}; "
        f"a contact holds at most 1,000 {kind}."
    )


async def filled(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    email: str,
    count: int,
    kind: str = "phones",
    start: int = 0,
) -> int:
    """The contact owning `email` (new, or holding no value of `kind` yet) grown to `count`
    values of `kind` (`email` among them for emails) by one batch of up to 100 values an item:
    its id."""
    if kind == "emails":
        extra = values(kind, start, count - 1)
        items = [{"emails": [email, *extra[at : at + 99]]} for at in range(0, len(extra), 99)]
    else:
        more = values(kind, start, count)
        items = [{"emails": [email], kind: more[at : at + 100]} for at in range(0, count, 100)]
    response = await client.post(BATCH, json={"contacts": items}, headers=auth)
    assert response.status_code == 200, response.text
    contact: dict[str, Any] = response.json()["results"][-1]["contact"]
    assert len(contact[kind]) == count
    return int(contact["id"])


async def state(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str], *ids: int
) -> dict[str, Any]:
    """What a refused write must leave alone: every table's rows, the change feed, and the
    contacts as the API shows them."""
    feed = await client.get(f"{CONTACTS}/changes", params={"limit": 1000}, headers=auth)
    assert feed.status_code == 200, feed.text
    return {
        "rows": await table_counts(db),
        "feed": feed.json()["data"],
        "contacts": [answered(await client.get(f"{CONTACTS}/{id_}", headers=auth)) for id_ in ids],
    }


@pytest.fixture
async def space(db: Database) -> int:
    return await make_space(db)


@pytest.fixture
async def auth(db: Database, space: int) -> dict[str, str]:
    return bearer(await make_key(db, space))


async def test_a_create_past_the_cap_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    full = await filled(client, auth, "ann@example.com", MAX_VALUES)
    before = await state(client, db, auth, full)
    assert before["rows"]["phones"] == MAX_VALUES
    body = {"emails": ["ann@example.com"], "phones": values("phones", 5000, 4), "names": ["Ann"]}
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 422, response.text
    message = refusal("phones", 1004, full)
    assert answered(response) == {"message": message, "errors": {"phones": [message]}}
    assert await state(client, db, auth, full) == before


async def test_a_create_that_reaches_the_cap_exactly_is_merged(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    full = await filled(client, auth, "ann@example.com", MAX_VALUES - 100)
    body = {"emails": ["ann@example.com"], "phones": values("phones", 5000, 100)}
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 200, response.text
    contact = answered(response)
    assert (contact["id"], len(contact["phones"])) == (full, MAX_VALUES)
    assert (await table_counts(db))["phones"] == MAX_VALUES
    body = {"emails": ["ann@example.com"], "phones": values("phones", 6000, 1)}
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert answered(response)["errors"] == {"phones": [refusal("phones", 1001, full)]}


async def test_values_count_once_by_normal_form(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    full = await filled(client, auth, "ann@example.com", MAX_VALUES)
    held = values("phones", 0, 3)
    # The same numbers in another format are the same phones: only the new one counts.
    resent = [phone.replace("+1 555 ", "1-555-") for phone in held]
    body = {"emails": ["ANN@example.com"], "phones": [*resent, *values("phones", 5000, 1)]}
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert answered(response)["errors"] == {"phones": [refusal("phones", 1001, full)]}
    body = {"emails": ["ANN@example.com"], "phones": resent, "names": ["Ann"]}
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 200, response.text
    assert answered(response)["phones"][:3] == held
    # Two contacts that share 200 phones hold 1,000 together: one more is refused, and
    # without it they merge.
    first = await filled(client, auth, "bo@example.com", 600, start=10_000)
    second = await filled(client, auth, "cy@example.com", 600, start=10_400)
    body = {"emails": ["cy@example.com", "bo@example.com"], "phones": values("phones", 5000, 1)}
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert answered(response)["errors"] == {"phones": [refusal("phones", 1001, first)]}
    body = {"emails": ["cy@example.com", "bo@example.com"]}
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 200, response.text
    merged = answered(response)
    assert (merged["id"], len(merged["phones"])) == (first, MAX_VALUES)
    alias = answered(await client.get(f"{CONTACTS}/{second}", headers=auth))
    assert alias["id"] == first


async def test_a_merge_of_contacts_past_the_cap_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    first = await filled(client, auth, "bo@example.com", 600)
    second = await filled(client, auth, "cy@example.com", 600, start=600)
    before = await state(client, db, auth, first, second)
    body = {"emails": ["cy@example.com", "bo@example.com"], "names": ["Bo"]}
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 422, response.text
    message = refusal("phones", 1200, first)
    assert answered(response) == {"message": message, "errors": {"phones": [message]}}
    after = await state(client, db, auth, first, second)
    assert after == before
    assert [contact["id"] for contact in after["contacts"]] == [first, second]


@pytest.mark.parametrize("kind", ["emails", "names", "locations"])
async def test_every_collection_is_capped(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str], kind: str
) -> None:
    full = await filled(client, auth, "ann@example.com", MAX_VALUES, kind)
    before = await state(client, db, auth, full)
    extra = values(kind, 5000, 1)
    body = {"emails": ["ann@example.com", *(extra if kind == "emails" else [])]}
    if kind != "emails":
        body[kind] = extra
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 422, response.text
    message = refusal(kind, MAX_VALUES + 1, full)
    assert answered(response) == {"message": message, "errors": {kind: [message]}}
    assert await state(client, db, auth, full) == before


async def test_each_collection_past_the_cap_is_named(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    full = await filled(client, auth, "ann@example.com", MAX_VALUES)
    await filled(client, auth, "ann@example.com", MAX_VALUES, "names")
    body = {
        "emails": ["ann@example.com"],
        "phones": values("phones", 5000, 2),
        "names": values("names", 5000, 1),
        "locations": ["Paris"],
    }
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 422, response.text
    phones, names = refusal("phones", 1002, full), refusal("names", 1001, full)
    assert answered(response) == {
        "message": f"{phones} (and 1 more error)",
        "errors": {"phones": [phones], "names": [names]},
    }


async def test_a_batch_item_past_the_cap_fails_alone(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    """Each item meets the contact as the items before it left it."""
    full = await filled(client, auth, "ann@example.com", 950)
    items = [
        {"emails": ["ann@example.com"], "phones": values("phones", 5000, 40)},  # 990
        {"emails": ["ann@example.com"], "phones": values("phones", 6000, 20)},  # 1,010
        {"emails": ["ann@example.com"], "phones": values("phones", 7000, 10)},  # 1,000
        {"emails": ["bo@example.com"], "phones": values("phones", 8000, 1)},
    ]
    response = await client.post(BATCH, json={"contacts": items}, headers=auth)
    assert response.status_code == 207, response.text
    body = response.json()
    assert (body["created"], body["merged"], body["failed"]) == (1, 2, 1)
    results = body["results"]
    assert [result["status"] for result in results] == [200, 422, 200, 201]
    message = refusal("phones", 1010, full)
    assert results[1] == {
        "index": 1,
        "status": 422,
        "code": "validation_failed",
        "message": message,
        "errors": {"phones": [message]},
    }
    assert len(results[0]["contact"]["phones"]) == 990
    assert len(results[2]["contact"]["phones"]) == MAX_VALUES
    contact = answered(await client.get(f"{CONTACTS}/{full}", headers=auth))
    assert contact == results[2]["contact"]
    assert await table_counts(db) == {
        "contacts": 2,
        "emails": 2,
        "phones": MAX_VALUES + 1,
        "names": 0,
        "locations": 0,
    }


async def test_a_contact_created_in_a_batch_is_capped_in_it(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    items = [
        {"emails": ["ann@example.com"], "phones": values("phones", at, 100)}
        for at in range(0, MAX_VALUES + 100, 100)
    ]
    response = await client.post(BATCH, json={"contacts": items}, headers=auth)
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert [result["status"] for result in results] == [201] + [200] * 9 + [422]
    created = results[0]["contact"]["id"]
    assert results[10]["errors"] == {"phones": [refusal("phones", 1100, created)]}
    # Under atomic=true nothing is stored, and the contact has no id to name.
    again = [{**item, "emails": ["bo@example.com"]} for item in items]
    before = await state(client, db, auth, created)
    response = await client.post(
        BATCH, params={"atomic": "true"}, json={"contacts": again}, headers=auth
    )
    assert response.status_code == 422, response.text
    message = refusal("phones", 1100, "the contact that an earlier item of this batch creates")
    assert answered(response)["errors"] == {"contacts.10.phones": [message]}
    assert await state(client, db, auth, created) == before


async def test_an_atomic_batch_with_an_item_past_the_cap_stores_nothing(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    full = await filled(client, auth, "ann@example.com", MAX_VALUES)
    before = await state(client, db, auth, full)
    items = [
        {"emails": ["bo@example.com"], "names": ["Bo"]},
        {"emails": ["ann@example.com"], "phones": values("phones", 5000, 1)},
    ]
    response = await client.post(
        BATCH, params={"atomic": "true"}, json={"contacts": items}, headers=auth
    )
    assert response.status_code == 422, response.text
    message = refusal("phones", 1001, full)
    body = answered(response)
    assert body["errors"] == {"contacts.1.phones": [message]}
    assert (body["created"], body["merged"], body["failed"]) == (1, 0, 1)
    assert body["results"] == [
        {"index": 0, "status": 201},
        {
            "index": 1,
            "status": 422,
            "code": "validation_failed",
            "message": message,
            "errors": {"phones": [message]},
        },
    ]
    assert await state(client, db, auth, full) == before


async def test_a_refusal_is_not_kept_as_the_idempotent_answer(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    full = await filled(client, auth, "ann@example.com", MAX_VALUES)
    before = await state(client, db, auth, full)
    headers = {**auth, "Idempotency-Key": "limits-1"}
    body = {"emails": ["ann@example.com"], "phones": values("phones", 5000, 1)}
    response = await client.post(CONTACTS, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert await state(client, db, auth, full) == before
    # Room made, the same request with the same key is answered afresh.
    cleared = await client.put(f"{CONTACTS}/{full}", json={"phones": []}, headers=auth)
    assert cleared.status_code == 200, cleared.text
    response = await client.post(CONTACTS, json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert answered(response)["phones"] == body["phones"]


async def test_an_update_cannot_pass_the_cap(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str]
) -> None:
    """PUT replaces a collection with at most MAX_ITEMS values, so it needs no check of its
    own. Replacing a full collection makes room again: the cap counts what is stored."""
    assert MAX_ITEMS < MAX_VALUES
    full = await filled(client, auth, "ann@example.com", MAX_VALUES)
    replaced = values("phones", 5000, MAX_ITEMS)
    response = await client.put(f"{CONTACTS}/{full}", json={"phones": replaced}, headers=auth)
    assert response.status_code == 200, response.text
    items = [
        {"emails": ["ann@example.com"], "phones": values("phones", at, 100)}
        for at in range(0, MAX_VALUES - MAX_ITEMS, 100)
    ]
    response = await client.post(BATCH, json={"contacts": items}, headers=auth)
    assert response.status_code == 200, response.text
    assert len(response.json()["results"][-1]["contact"]["phones"]) == MAX_VALUES
    body = {"emails": ["ann@example.com"], "phones": values("phones", 6000, 1)}
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert answered(response)["errors"] == {"phones": [refusal("phones", 1001, full)]}


async def test_a_contact_over_the_cap_already_may_take_other_values(
    client: httpx.AsyncClient, db: Database, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A contact that holds more than the cap (stored before there was one) is refused only
    what would grow the collection further, as the shortcut that answers a request bringing
    nothing new already does."""
    full = await filled(client, auth, "ann@example.com", MAX_VALUES)
    monkeypatch.setattr(merging, "MAX_VALUES", 500)
    # Nothing new: answered from the contact as it is (no write).
    same = {"emails": ["ann@example.com"], "phones": values("phones", 0, 2)}
    assert (await client.post(CONTACTS, json=same, headers=auth)).status_code == 200
    # A new name merges; the phones stay as they are.
    named = {**same, "names": ["Ann"]}
    response = await client.post(CONTACTS, json=named, headers=auth)
    assert response.status_code == 200, response.text
    assert len(answered(response)["phones"]) == MAX_VALUES
    grown = {**same, "phones": values("phones", 5000, 1)}
    response = await client.post(CONTACTS, json=grown, headers=auth)
    assert response.status_code == 422, response.text
    assert list(answered(response)["errors"]) == ["phones"]
    assert answered(response)["message"].endswith("a contact holds at most 500 phones.")
    assert answered(await client.get(f"{CONTACTS}/{full}", headers=auth))["names"] == ["Ann"]


async def test_an_import_lists_a_row_past_the_cap_in_its_rejects(
    importer: Importer,
    client: httpx.AsyncClient,
    auth: dict[str, str],
    space: int,
    tmp_path: Path,
) -> None:
    full = await filled(client, auth, "ann@example.com", MAX_VALUES)
    path = tmp_path / "people.ndjson"
    lines = [
        {"emails": ["ann@example.com"], "phones": values("phones", 5000, 1)},
        {"emails": ["bo@example.com"], "phones": values("phones", 5000, 1)},
        {"emails": ["ann@example.com"], "names": ["Ann"]},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert await importer.json(str(space), str(path)) == {
        "created": 1,
        "merged": 1,
        "failed": 1,
        "lines": 3,
    }
    header, rejected = rejects_of(path)
    assert (header, rejected[:2]) == (
        ["line", "reason", "row"],
        ["1", refusal("phones", 1001, full)],
    )
    contact = answered(await client.get(f"{CONTACTS}/{full}", headers=auth))
    assert (len(contact["phones"]), contact["names"]) == (MAX_VALUES, ["Ann"])

"""POST /contacts/batch: items in order with the rules of POST /contacts, per-item results,
207, atomic, on_conflict, its own body limit and rate limit."""

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from contactbase.app import close, create_app
from contactbase.contacts.models import Contact
from contactbase.db import Database
from contactbase.prepared import COPY_FROM_ROWS
from contactbase.settings import Settings
from tests.conftest import empty_tables
from tests.factories import (
    CONTACTS,
    SEED,
    answered,
    make_tenant,
    table_counts,
    until_waiting_on_a_lock,
)
from tests.test_write_paths import STEPS, comparable, stored_rows, without_timestamps

BATCH = f"{CONTACTS}/batch"


def contacts_of(response: httpx.Response) -> list[dict[str, Any]]:
    return [result.get("contact") for result in response.json()["results"]]


async def test_new_contacts_are_created_in_order(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    items = [SEED, {"emails": ["b@example.com"]}, {"emails": ["c@example.com"], "names": ["C"]}]
    response = await client.post(BATCH, json={"contacts": items}, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["merged"], body["failed"]) == (3, 0, 0)
    assert [(r["index"], r["status"]) for r in body["results"]] == [(0, 201), (1, 201), (2, 201)]
    ids = [contact["id"] for contact in contacts_of(response)]
    assert ids == sorted(ids)
    first = contacts_of(response)[0]
    assert {k: first[k] for k in SEED} == SEED
    for contact in contacts_of(response):
        fetched = await client.get(f"{CONTACTS}/{contact['id']}", headers=auth)
        assert answered(fetched) == contact


async def test_items_sharing_an_email_end_as_one_contact(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    items = [
        {"emails": ["ann@example.com"], "names": ["Ann"], "phones": ["555 0101"]},
        {"emails": ["other@example.com"]},
        {"emails": ["ANN@example.com", "ann2@example.com"], "names": ["Annie", "Ann"]},
    ]
    response = await client.post(BATCH, json={"contacts": items}, headers=auth)
    body = response.json()
    assert (body["created"], body["merged"], body["failed"]) == (2, 1, 0)
    first, _, third = contacts_of(response)
    assert third["id"] == first["id"]
    assert first["emails"] == ["ann@example.com"]  # as it stood after its own item
    assert third["emails"] == ["ann@example.com", "ann2@example.com"]
    assert third["names"] == ["Ann", "Annie"]
    assert third["phones"] == ["555 0101"]
    fetched = answered(await client.get(f"{CONTACTS}/{first['id']}", headers=auth))
    assert fetched == third
    assert await table_counts(db) == {
        "contacts": 2,
        "emails": 3,
        "phones": 1,
        "names": 2,
        "locations": 0,
    }


async def test_an_item_merges_stored_and_new_contacts_into_the_oldest(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    old = (await client.post(CONTACTS, json={"emails": ["old@example.com"]}, headers=auth)).json()
    items = [
        {"emails": ["new@example.com"], "custom_fields": {"profile_field_1": "from new"}},
        {"emails": ["new@example.com", "old@example.com"], "names": ["Both"]},
        {"emails": ["new@example.com"]},
    ]
    response = await client.post(BATCH, json={"contacts": items}, headers=auth)
    assert response.status_code == 200
    created, merged, again = contacts_of(response)
    assert created["id"] > old["id"]
    assert merged["id"] == again["id"] == old["id"]
    assert merged["emails"] == ["old@example.com", "new@example.com"]
    assert merged["custom_fields"] == {"profile_field_1": "from new"}
    assert [r["status"] for r in response.json()["results"]] == [201, 200, 200]
    # The contact created by the first item is now an alias of the oldest.
    through_alias = answered(await client.get(f"{CONTACTS}/{created['id']}", headers=auth))
    assert through_alias == again
    counts = await table_counts(db)
    assert (counts["contacts"], counts["emails"], counts["names"]) == (2, 2, 1)


async def test_invalid_items_fail_alone_with_their_reasons(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    items: list[Any] = [
        {"emails": ["ok@example.com"]},
        {"emails": ["fine@example.com", "not-an-email"]},
        "not an object",
        {"emails": ["also-ok@example.com"], "unknown": 1},
        {"emails": ["last@example.com"]},
    ]
    response = await client.post(BATCH, json={"contacts": items}, headers=auth)
    assert response.status_code == 207
    body = response.json()
    assert (body["created"], body["merged"], body["failed"]) == (2, 0, 3)
    results = body["results"]
    assert [r["status"] for r in results] == [201, 422, 422, 422, 201]
    assert results[1]["code"] == "validation_failed"
    assert list(results[1]["errors"]) == ["emails.1"]
    assert results[1]["message"] == results[1]["errors"]["emails.1"][0]
    assert results[2]["errors"] == {"body": ["Each item must be a JSON object."]}
    assert list(results[3]["errors"]) == ["unknown"]
    assert (await table_counts(db))["contacts"] == 2


async def test_item_errors_are_those_of_a_single_create(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Each item is validated as the body of POST /contacts is: the same messages."""
    auth = await make_tenant(db)
    bad: list[Any] = [
        {},
        {"emails": []},
        {"emails": ["x@example.com"], "phones": ["12"]},
        {"emails": ["x@example.com"], "names": [" "]},
        {"emails": ["x@example.com"], "custom_fields": {"profile_field_16": "3"}},
        {"emails": ["x@example.com"], "custom_fields": {"profile_field_26": "yesterday"}},
        {"emails": [None]},
        {"emails": "x@example.com"},
    ]
    response = await client.post(BATCH, json={"contacts": bad}, headers=auth)
    for item, result in zip(bad, response.json()["results"], strict=True):
        single = answered(await client.post(CONTACTS, json=item, headers=auth))
        assert result["status"] == 422
        assert {k: result[k] for k in ("message", "errors")} == single


async def test_on_conflict_error_refuses_known_emails_per_item(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    known = (await client.post(CONTACTS, json={"emails": ["k@example.com"]}, headers=auth)).json()
    items = [
        {"emails": ["k@example.com"], "names": ["Not stored"]},
        {"emails": ["fresh@example.com"]},
        {"emails": ["FRESH@example.com"], "names": ["Not stored either"]},
    ]
    response = await client.post(
        f"{BATCH}?on_conflict=error", json={"contacts": items}, headers=auth
    )
    assert response.status_code == 207
    first, second, third = response.json()["results"]
    assert first["status"] == 409
    assert first["code"] == "conflict"
    assert first["existing_contact_id"] == known["id"]
    assert second["status"] == 201
    assert third["existing_contact_id"] == second["contact"]["id"]
    assert (await table_counts(db))["names"] == 0


@pytest.mark.parametrize(
    "failing", [{"emails": ["bad"]}, {"emails": ["k@example.com"]}], ids=["invalid", "conflict"]
)
async def test_atomic_batch_stores_nothing_when_an_item_fails(
    client: httpx.AsyncClient, db: Database, failing: dict[str, Any]
) -> None:
    auth = await make_tenant(db)
    await client.post(CONTACTS, json={"emails": ["k@example.com"]}, headers=auth)
    before = await table_counts(db)
    items = [{"emails": ["a@example.com"]}, failing, {"emails": ["k@example.com", "b@example.com"]}]
    response = await client.post(
        f"{BATCH}?atomic=true&on_conflict=error", json={"contacts": items}, headers=auth
    )
    assert response.status_code == 422
    body = answered(response)
    assert (body["created"], body["failed"]) == (1, 2)
    assert [r["status"] for r in body["results"]] == [
        201,
        422 if "bad" in failing["emails"] else 409,
        409,
    ]
    assert "contact" not in body["results"][0]
    assert next(iter(body["errors"])).startswith("contacts.1.")
    assert "contacts.2.emails" in body["errors"]
    assert await table_counts(db) == before


async def test_atomic_batch_that_succeeds_is_stored(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    items = [{"emails": ["a@example.com"]}, {"emails": ["a@example.com"], "names": ["A"]}]
    response = await client.post(f"{BATCH}?atomic=true", json={"contacts": items}, headers=auth)
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == [201, 200]
    assert (await table_counts(db))["names"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "contacts"),
        ({"contacts": []}, "contacts"),
        ({"contacts": [{"emails": ["a@example.com"]}] * 1001}, "contacts"),
        ({"contacts": {"emails": ["a@example.com"]}}, "contacts"),
        ({"contacts": [{"emails": ["a@example.com"]}], "extra": 1}, "extra"),
        ([], "body"),
    ],
    ids=["missing", "empty", "too-many", "not-a-list", "extra-key", "not-an-object"],
)
async def test_a_malformed_batch_is_refused_whole(
    client: httpx.AsyncClient, db: Database, body: Any, field: str
) -> None:
    auth = await make_tenant(db)
    response = await client.post(BATCH, json=body, headers=auth)
    assert response.status_code == 422
    assert list(answered(response)["errors"]) == [field]
    assert (await table_counts(db))["contacts"] == 0


async def test_unknown_query_parameters_are_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    body = {"contacts": [{"emails": ["a@example.com"]}]}
    response = await client.post(f"{BATCH}?atomic=maybe", json=body, headers=auth)
    assert response.status_code == 422
    assert list(answered(response)["errors"]) == ["atomic"]


async def test_the_batch_has_its_own_body_limit(settings: Settings, db: Database) -> None:
    """Larger than the 1 MiB of other requests is fine up to CONTACTBASE_MAX_BATCH_BYTES."""
    app: FastAPI = create_app(settings.model_copy(update={"max_batch_bytes": 2 * 1024 * 1024}))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            auth = await make_tenant(db)
            name = "n" * 200
            items = [{"emails": [f"p{n}@example.com"], "names": [name] * 6} for n in range(1000)]
            accepted = await http.post(BATCH, json={"contacts": items}, headers=auth)
            assert accepted.status_code == 200, accepted.text[:300]
            assert len(accepted.request.content) > 1024 * 1024
            items = [{"emails": [f"q{n}@example.com"], "names": [name] * 12} for n in range(1000)]
            refused = await http.post(BATCH, json={"contacts": items}, headers=auth)
            assert refused.status_code == 413
            assert answered(refused)["message"] == (
                f"The request body is larger than {2 * 1024 * 1024} bytes."
            )
            single = await http.post(
                CONTACTS, json={"emails": ["a@example.com"], "names": [name] * 6000}, headers=auth
            )
            assert single.status_code == 413
    finally:
        await close(app)
    assert (await table_counts(db))["contacts"] == 1000


async def test_batches_count_against_their_own_limit(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db, limits={})
    body = {"contacts": [{"emails": ["a@example.com"]}]}
    statuses = [(await client.post(BATCH, json=body, headers=auth)).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    limited = await client.post(BATCH, json=body, headers=auth)
    assert limited.headers["RateLimit-Policy"] == '"batch";q=10;w=60'
    # Creates have a limit of their own, untouched.
    assert (await client.post(CONTACTS, json=body["contacts"][0], headers=auth)).status_code == 200


def creates_of_the_write_path_sequence() -> list[Any]:
    """The bodies of the creates that tests/test_write_paths.py sends (merges into one and into
    several contacts, slots set, filled and overwritten, a repeat that changes nothing)."""
    return [
        step.body
        for step in STEPS
        if step.method == "POST" and step.path == CONTACTS and step.status in (200, 201)
    ]


async def sent_as(
    client: httpx.AsyncClient, db: Database, bodies: list[Any], send: str
) -> tuple[list[Any], dict[str, Any]]:
    """Each body sent to an emptied database (`single`: POST /contacts one by one; `one batch`;
    `batches of one`): the answers, less their times, and every stored row."""
    await empty_tables(db)
    auth = await make_tenant(db)
    answers = []
    if send == "one batch":
        response = await client.post(BATCH, json={"contacts": bodies}, headers=auth)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        answers = [(r["status"], without_timestamps(r["contact"])) for r in results]
    for body in bodies if send != "one batch" else ():
        if send == "single":
            answers.append(comparable(await client.post(CONTACTS, json=body, headers=auth)))
        else:
            response = await client.post(BATCH, json={"contacts": [body]}, headers=auth)
            (result,) = response.json()["results"]
            answers.append((result["status"], without_timestamps(result["contact"])))
    return answers, await stored_rows(db)


async def test_a_batch_stores_what_single_creates_store(
    client: httpx.AsyncClient, db: Database
) -> None:
    """POST /contacts one by one, the same bodies as one batch, and as batches of one: the same
    answers (item by item) and the same rows in every contact table."""
    bodies = creates_of_the_write_path_sequence()
    assert len(bodies) >= 8
    single = await sent_as(client, db, bodies, "single")
    assert [status for status, _ in single[0]].count(201) >= 4
    assert await sent_as(client, db, bodies, "one batch") == single
    assert await sent_as(client, db, bodies, "batches of one") == single


def many_bodies(count: int) -> list[Any]:
    """Contacts with every kind of value and slot (text, number, date), every fifth meeting an
    earlier one's email, every seventh two earlier ones' (a merge of several)."""
    bodies: list[Any] = []
    for n in range(count):
        emails = [f"p{n}@example.com", f"P{n}.alt@example.org"]
        if n % 5 == 4:
            emails.append(f"p{n - 3}@example.com")
        if n % 7 == 6:
            emails += [f"p{n - 1}@example.com", f"p{n - 6}@example.com"]
        body: dict[str, Any] = {
            "emails": emails,
            "phones": [f"+1 555 {n:04d}", f"+44 20 {n:04d} 0000"],
            "names": [f"Name {n}", "Shared name"],
            "locations": [f"City {n % 3}"],
        }
        if n % 2:
            body["custom_fields"] = {
                "profile_field_1": f"text {n}",
                "profile_field_16": n + 0.5,
                "profile_field_17": n,
                "profile_field_26": "2026-11-30",
                "profile_field_27": "2026-11-30T08:00:00Z",
            }
        bodies.append(body)
    return bodies


async def test_a_large_batch_stores_what_single_creates_store(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Enough rows that PostgreSQL writes them with COPY: the same answers and rows as single
    creates (which write few rows at a time, with INSERT)."""
    bodies = many_bodies(80)
    assert COPY_FROM_ROWS <= 80
    single = await sent_as(client, db, bodies, "single")
    assert await sent_as(client, db, bodies, "one batch") == single


@pytest.mark.parametrize("round_number", range(4))
async def test_racing_batches_end_with_one_contact_per_person(
    app: FastAPI, client: httpx.AsyncClient, db: Database, round_number: int
) -> None:
    """Two batches over the same people, in opposite orders and with emails of their own,
    both planned before either writes (the test holds the value table's lock until both
    wait on it): one contact per person, holding every email and name of both."""
    auth = await make_tenant(db)
    people = [(f"p{n}-{round_number}@example.com", f"q{n}@example.com") for n in range(30)]
    first = [{"emails": [a], "names": ["First"]} for a, _ in people]
    second = [{"emails": [b, a], "names": ["Second"]} for a, b in reversed(people)]
    async with db.writer() as session, session.begin():
        if db.is_sqlite:
            await session.execute(text("DELETE FROM contact_emails WHERE 0"))  # the write lock
        else:
            await session.execute(text("LOCK TABLE contact_emails IN SHARE MODE"))
        racing = [
            asyncio.ensure_future(client.post(BATCH, json={"contacts": c}, headers=auth))
            for c in (first, second)
        ]
        await until_waiting_on_a_lock(app, db, 2)
    responses = await asyncio.gather(*racing)
    assert [response.status_code for response in responses] == [200, 200]
    async with db.reader() as session:
        emails = await session.execute(text("SELECT normalised, contact_id FROM contact_emails"))
        owners: dict[str, int] = {email: owner for email, owner in emails.all()}
        live = await session.scalar(
            select(func.count()).select_from(Contact).where(Contact.merged_into_id.is_(None))
        )
        names = (
            await session.execute(
                text("SELECT contact_id, count(*) FROM contact_names GROUP BY contact_id")
            )
        ).all()
    assert live == len(people)
    assert len(owners) == 2 * len(people)
    assert all(owners[a] == owners[b] for a, b in people)
    assert sorted(count for _, count in names) == [2] * len(people)

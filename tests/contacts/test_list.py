"""GET /contacts: Laravel's envelope, cursors, date windows, look-ups and options.

Every test stays under the default list limit (15 a minute per Space)."""

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from contactbase.contacts.pagination import Cursor, encode_cursor
from contactbase.db import Database
from tests.factories import (
    CONTACTS,
    SEED,
    add_contact,
    answered,
    bearer,
    make_key,
    make_space,
    make_tenant,
)

PATH = f"http://testserver{CONTACTS}"
LOCAL = "%Y-%m-%d %H:%M:%S"
NEW_YORK = ZoneInfo("America/New_York")
ONE = timedelta(seconds=1)
URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
EMPTY_PAGE = {
    "data": [],
    "path": PATH,
    "per_page": 200,
    "next_cursor": None,
    "next_page_url": None,
    "prev_cursor": None,
    "prev_page_url": None,
}
Auth = dict[str, str]
Params = list[tuple[str, str]]


async def add(client: httpx.AsyncClient, auth: Auth, body: dict[str, Any]) -> int:
    """Create (or merge) a contact: its id."""
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code in (200, 201), response.text
    contact_id: int = response.json()["id"]
    return contact_id


async def add_many(client: httpx.AsyncClient, auth: Auth, count: int) -> list[int]:
    """`count` contacts c0@… c{count-1}@…, their ids oldest first."""
    return [await add(client, auth, {"emails": [f"c{n}@example.com"]}) for n in range(count)]


async def page(
    client: httpx.AsyncClient, auth: Auth, params: Params | str | None = None
) -> dict[str, Any]:
    """A page, by its query parameters or by a page URL the API gave."""
    if isinstance(params, str):
        response = await client.get(params, headers=auth)
    else:
        response = await client.get(CONTACTS, params=tuple(params or ()), headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def assert_refused(client: httpx.AsyncClient, auth: Auth, cursors: list[str]) -> None:
    for cursor in cursors:
        response = await client.get(CONTACTS, params={"cursor": cursor}, headers=auth)
        assert response.status_code == 422, cursor
        message = f"The cursor field is not a valid cursor ({json.dumps(cursor)})."
        assert answered(response) == invalid("cursor", message)


def ids(body: dict[str, Any]) -> list[int]:
    return [item["id"] for item in body["data"]]


def invalid(field: str, message: str) -> dict[str, Any]:
    return {"message": message, "errors": {field: [message]}}


def summary(
    contact_id: int, email: str, name: str | None = None, phone: str | None = None
) -> dict[str, Any]:
    return dict(id=contact_id, email=email, name=name, phone=phone, location=None)


def seed_summary(contact_id: int) -> dict[str, Any]:
    return {
        **summary(contact_id, "john@example.com", "John Doe", "+1234567890"),
        "location": "New York, NY",
    }


async def test_envelope_is_laravel_cursor_pagination(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    assert await page(client, auth) == EMPTY_PAGE
    first = await add(client, auth, SEED)
    second = await add(client, auth, {"emails": ["b@example.com"], "names": ["B"]})
    third = await add(client, auth, {"emails": ["c@example.com"]})
    body = await page(client, auth, [("per_page", "2")])
    token = body["next_cursor"]
    assert isinstance(token, str)
    assert list(body) == list(EMPTY_PAGE)
    assert body == {
        **EMPTY_PAGE,
        "data": [summary(third, "c@example.com"), summary(second, "b@example.com", "B")],
        "per_page": 2,
        "next_cursor": token,
        "next_page_url": f"{PATH}?per_page=2&cursor={token}",
    }
    last = await page(client, auth, body["next_page_url"])
    back = last["prev_cursor"]
    assert isinstance(back, str)
    assert last == {
        **EMPTY_PAGE,
        "data": [seed_summary(first)],
        "per_page": 2,
        "prev_cursor": back,
        "prev_page_url": f"{PATH}?per_page=2&cursor={back}",
    }


async def test_path_is_built_from_the_request_host(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    await add_many(client, auth, 2)
    host = "https://api.example.org:8443"
    body = (await client.get(f"{host}{CONTACTS}?per_page=1", headers=auth)).json()
    assert body["path"] == f"{host}{CONTACTS}"
    assert body["next_page_url"] == f"{host}{CONTACTS}?per_page=1&cursor={body['next_cursor']}"


async def test_per_page_defaults_to_200(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    for n in range(201):
        await add_contact(client, auth, {"emails": [f"c{n}@example.com"]})
    first = await page(client, auth)
    assert first["per_page"] == 200
    assert [item["email"] for item in first["data"]] == [
        f"c{n}@example.com" for n in range(200, 0, -1)
    ]
    rest = await page(client, auth, first["next_page_url"])
    assert [item["email"] for item in rest["data"]] == ["c0@example.com"]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(("per_page", "shown"), [("1", 1), ("5000", 3), ("3", 3)])
async def test_per_page_bounds_are_accepted(
    client: httpx.AsyncClient, db: Database, per_page: str, shown: int
) -> None:
    auth = await make_tenant(db)
    created = await add_many(client, auth, 3)
    body = await page(client, auth, [("per_page", per_page)])
    assert body["per_page"] == int(per_page)
    assert ids(body) == created[::-1][:shown]
    assert (body["next_cursor"] is None) == (shown == 3)


@pytest.mark.parametrize(
    ("per_page", "message"),
    [
        ("0", 'The per_page field must be at least 1 ("0").'),
        ("-1", 'The per_page field must be at least 1 ("-1").'),
        ("5001", 'The per_page field must not be greater than 5000 ("5001").'),
        ("x", 'The per_page field must be an integer ("x").'),
        ("1.5", 'The per_page field must be an integer ("1.5").'),
        ("", 'The per_page field must be an integer ("").'),
    ],
)
async def test_per_page_out_of_bounds_is_422(
    client: httpx.AsyncClient, db: Database, per_page: str, message: str
) -> None:
    auth = await make_tenant(db)
    response = await client.get(CONTACTS, params={"per_page": per_page}, headers=auth)
    assert response.status_code == 422
    assert answered(response) == invalid("per_page", message)


async def test_forward_walk_and_back(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    created = await add_many(client, auth, 5)
    first = await page(client, auth, [("per_page", "2")])
    second = await page(client, auth, [("per_page", "2"), ("cursor", first["next_cursor"])])
    third = await page(client, auth, second["next_page_url"])
    assert [ids(first), ids(second), ids(third)] == [created[4:2:-1], created[2:0:-1], created[:1]]
    assert [first["prev_cursor"], first["prev_page_url"]] == [None, None]
    assert [third["next_cursor"], third["next_page_url"]] == [None, None]
    assert isinstance(second["prev_cursor"], str)
    assert isinstance(second["next_cursor"], str)
    # Going back gives each previous page exactly as it was first served.
    assert await page(client, auth, [("per_page", "2"), ("cursor", third["prev_cursor"])]) == second
    assert await page(client, auth, second["prev_page_url"]) == first


async def test_walk_stays_correct_while_contacts_are_added(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    created = await add_many(client, auth, 5)
    body = await page(client, auth, [("per_page", "2")])
    seen, added = ids(body), 0
    while body["next_page_url"] is not None:
        # New contacts arrive between every two pages.
        for _ in range(2):
            await add(client, auth, {"emails": [f"new{added}@example.com"]})
            added += 1
        body = await page(client, auth, body["next_page_url"])
        seen += ids(body)
    assert seen == created[::-1]
    assert added == 4
    assert len(ids(await page(client, auth))) == 9


async def test_forged_cursors_are_422(client: httpx.AsyncClient, db: Database) -> None:
    space_id = await make_space(db, "A")
    auth = bearer(await make_key(db, space_id))
    other = await make_tenant(db, "B")
    await add_many(client, auth, 3)
    await add_many(client, other, 2)
    token = (await page(client, auth, [("per_page", "1")]))["next_cursor"]
    foreign = (await page(client, other, [("per_page", "1")]))["next_cursor"]
    payload_text, tag_text = token.split(".")
    payload = base64.urlsafe_b64decode(payload_text + "=" * (-len(payload_text) % 4))
    forged_payload = base64.urlsafe_b64encode(payload[:1] + b"1").rstrip(b"=").decode()
    assert forged_payload != payload_text
    flipped = ("B" if tag_text[0] == "A" else "A") + tag_text[1:]
    forgeries = [
        f"{forged_payload}.{tag_text}",
        f"{payload_text}.{flipped}",
        f"{payload_text}.",
        payload_text,
        "garbage",
        "",
        "a.b.c",
        foreign,
        encode_cursor(Cursor(1, forward=True), b"not the service's key", space_id),
    ]
    await assert_refused(client, auth, forgeries)


async def test_malformed_variants_of_a_real_cursor_are_422(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    await add_many(client, auth, 3)
    token = (await page(client, auth, [("per_page", "1")]))["next_cursor"]
    payload_text, tag_text = token.split(".")
    assert len(payload_text) % 4 != 0  # its last character carries unused bits
    unused_bit = URL_SAFE[URL_SAFE.index(payload_text[-1]) ^ 1]
    variants = [
        f"{payload_text[:-1]}{unused_bit}.{tag_text}",
        f"{payload_text}.{tag_text[:8]}!{tag_text[8:]}",
        f"{payload_text}. {tag_text}",
        f"{payload_text}.{tag_text}==",
        f"{payload_text}=.{tag_text}",
    ]
    assert token not in variants
    await assert_refused(client, auth, variants)


def local(moment: datetime) -> str:
    return moment.strftime(LOCAL)


async def test_page_urls_carry_the_filters(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    start = local(datetime.now(UTC) - timedelta(minutes=1))
    end = local(datetime.now(UTC) + timedelta(minutes=5))
    matching = [
        await add(client, auth, {"emails": [f"m{n}@example.com"], "phones": ["5551234"]})
        for n in range(3)
    ]
    await add(client, auth, {"emails": ["other@example.com"], "phones": ["5559999"]})
    filters = [
        ("per_page", "1"),
        ("phone", "+555 12-34"),
        ("start_date", start),
        ("end_date", end),
        ("include_all_emails", "1"),
    ]
    pages = [await page(client, auth, filters)]
    while pages[-1]["next_page_url"] is not None:
        url = urlsplit(pages[-1]["next_page_url"])
        assert (url.scheme, url.netloc, url.path) == ("http", "testserver", CONTACTS)
        assert parse_qsl(url.query) == [*filters, ("cursor", pages[-1]["next_cursor"])]
        pages.append(await page(client, auth, pages[-1]["next_page_url"]))
    assert [ids(served) for served in pages] == [[contact] for contact in matching[::-1]]
    assert pages[0]["data"][0] == {
        **summary(matching[2], "m2@example.com", phone="5551234"),
        "emails": ["m2@example.com"],
    }
    back = urlsplit(pages[-1]["prev_page_url"])
    assert parse_qsl(back.query) == [*filters, ("cursor", pages[-1]["prev_cursor"])]
    assert await page(client, auth, pages[-1]["prev_page_url"]) == pages[1]

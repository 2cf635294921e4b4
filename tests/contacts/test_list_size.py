"""A list page never passes CONTACTBASE_MAX_RESPONSE_BYTES (SPEC 3, 6.8): it stops early with a
next_cursor, holds at least one contact, and goes out in body messages of at most 1 MiB."""

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contactbase.app import close, create_app
from contactbase.contacts.listing import CHUNK
from contactbase.db import Database
from contactbase.settings import Settings
from tests.factories import CONTACTS, make_tenant

BIG_TEXT = "x" * 10_000
# A cursor's length varies with its id's digits: the page sets aside room for the longest, so
# it may stop short of the cap by that difference (19 digits, in base64) in the cursor and in
# its link.
CURSOR_SLACK = 2 * 26


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, with pages capped at 50,000 bytes."""
    return settings.model_copy(update={"max_response_bytes": 50_000})


async def fill(client: httpx.AsyncClient, auth: dict[str, str], count: int) -> list[int]:
    """`count` contacts, each with four 10,000-character text slots (about 40 KB of JSON)."""
    items = [
        {
            "emails": [f"p{n}@example.com"],
            "custom_fields": {f"profile_field_{slot}": BIG_TEXT for slot in range(1, 5)},
        }
        for n in range(count)
    ]
    response = await client.post(f"{CONTACTS}/batch", json={"contacts": items}, headers=auth)
    assert response.status_code == 200, response.text
    return [result["contact"]["id"] for result in response.json()["results"]]


async def test_a_page_stops_before_its_json_passes_the_cap(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    auth = await make_tenant(db)
    ids = await fill(client, auth, 5)
    seen: list[int] = []
    url: str | None = f"{CONTACTS}?include_custom_fields=1&per_page=5000"
    pages = 0
    while url is not None:
        response = await client.get(url, headers=auth)
        assert response.status_code == 200
        assert len(response.content) <= settings.max_response_bytes
        page = response.json()
        seen += [row["id"] for row in page["data"]]
        url = page["next_page_url"]
        pages += 1
    assert seen == sorted(ids, reverse=True)  # each contact once, in order
    assert pages == 5  # a contact is about 40 KB: one fits in 50,000 bytes, two do not


async def test_the_cap_is_exact(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    """For caps around the sizes of pages: the answer never passes the cap, and it holds every
    contact that fits (one more would pass it, but for the longest cursor's few bytes, which
    the page keeps free)."""
    auth = await make_tenant(db)
    for n in range(40):
        body = {"emails": [f"q{n:02d}@example.com"], "names": ["N" * (1 + n % 7)]}
        await client.post(CONTACTS, json=body, headers=auth)
    rows = (await client.get(f"{CONTACTS}?per_page=100", headers=auth)).json()["data"]
    sizes = [len(json.dumps(row, separators=(",", ":"))) for row in rows]
    assert len(sizes) == 40
    short_pages: set[int] = set()
    for cap in range(1_000, 4_000, 53):
        app = create_app(settings.model_copy(update={"max_response_bytes": cap}))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as capped:
                response = await capped.get(f"{CONTACTS}?per_page=100", headers=auth)
        finally:
            await close(app)
        assert len(response.content) <= cap
        page = response.json()
        shown = len(page["data"])
        if shown == 40:
            assert page["next_cursor"] is None
            continue
        assert shown >= 1
        assert page["next_cursor"] is not None
        assert len(response.content) + sizes[shown] + 1 > cap - CURSOR_SLACK
        short_pages.add(shown)
    assert len(short_pages) > 20  # the sweep went through most page lengths


async def test_one_contact_larger_than_the_cap_is_still_a_page(
    db: Database, settings: Settings
) -> None:
    tiny = settings.model_copy(update={"max_response_bytes": 1024})
    app = create_app(tiny)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            auth = await make_tenant(db)
            ids = await fill(client, auth, 2)
            page = (await client.get(f"{CONTACTS}?include_custom_fields=1", headers=auth)).json()
            assert [row["id"] for row in page["data"]] == [ids[1]]
            assert page["next_cursor"] is not None
            last = (await client.get(page["next_page_url"], headers=auth)).json()
            assert [row["id"] for row in last["data"]] == [ids[0]]
            assert last["next_cursor"] is None
    finally:
        await close(app)


async def body_messages(app: FastAPI, path: str, headers: dict[str, str]) -> list[bytes]:
    """The answer's body messages, as the server would send them."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path.split("?")[0],
        "raw_path": path.split("?")[0].encode(),
        "query_string": path.split("?")[1].encode() if "?" in path else b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    bodies: list[bytes] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if requested:  # the client stays connected: nothing more comes
            await asyncio.Event().wait()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            bodies.append(message["body"])

    await app(scope, receive, send)
    return bodies


@pytest.fixture
async def large_pages(db: Database, settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings.model_copy(update={"max_response_bytes": 8 * 1024 * 1024}))
    yield app
    await close(app)


async def test_a_large_page_goes_out_in_messages_of_at_most_1_mib(
    db: Database, large_pages: FastAPI
) -> None:
    transport = httpx.ASGITransport(app=large_pages)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        auth = await make_tenant(db)
        await fill(client, auth, 80)  # about 3.2 MB of JSON
    bodies = await body_messages(
        large_pages, f"{CONTACTS}?include_custom_fields=1&per_page=100", auth
    )
    assert len(bodies) >= 4
    assert all(len(body) <= CHUNK for body in bodies)
    page = json.loads(b"".join(bodies))
    assert len(page["data"]) == 80

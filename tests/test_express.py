"""The express lane (middleware.ExpressLane) answers exactly as FastAPI's own routing of the same
endpoints does: the same requests, sent to the app with the lane and to one without it."""

import re
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI

from contactbase.app import create_app
from contactbase.db import Database
from contactbase.middleware import ExpressLane
from contactbase.settings import Settings
from tests.factories import CONTACTS, SEED, bearer, make_key, make_space, make_tenant

# Answers that differ between two calls whatever serves them.
VOLATILE_HEADERS = {"x-request-id", "ratelimit", "x-ratelimit-remaining", "date"}
VOLATILE_FIELDS = {"id", "created_at", "updated_at", "existing_contact_id"}


def has_express_lane(app: FastAPI) -> bool:
    return any(cast(Any, middleware.cls) is ExpressLane for middleware in app.user_middleware)


def without_express_lane(settings: Settings) -> FastAPI:
    app = create_app(settings)
    app.user_middleware = [m for m in app.user_middleware if cast(Any, m.cls) is not ExpressLane]
    return app


@pytest.fixture
async def pair(settings: Settings, db: Database) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Clients of the app as served (with the lane) and of the app without it."""
    apps = [create_app(settings), without_express_lane(settings)]
    assert [has_express_lane(app) for app in apps] == [True, False]
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://testserver",
        )
        for app in apps
    ]
    yield clients
    for client, app in zip(clients, apps, strict=True):
        await client.aclose()
        await app.state.limiter.close()
        await app.state.db.dispose()


def seen(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """Status, headers and body, less what changes from one call to the next."""
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE_HEADERS}
    body: Any = response.json() if response.content else None
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in VOLATILE_FIELDS}
        if "message" in body:  # it may quote a contact's id
            body["message"] = re.sub(r"id \d+", "id N", body["message"])
    return response.status_code, headers, body


@pytest.mark.parametrize(
    "path",
    [
        "{id}",
        "{id}?include_events=1&include_comet_tokens=true",
        "0000{id}",
        "999999",
        "99999999999999999999999999",
        "0",
        "abc",
        "exports",
        "%E2%91%A0",
        "{id}?per_page=5",
        "{id}?include_events=maybe",
    ],
)
async def test_gets_are_answered_alike(
    pair: list[httpx.AsyncClient], db: Database, path: str
) -> None:
    auth = await make_tenant(db)
    created = (await pair[0].post(CONTACTS, json=SEED, headers=auth)).json()
    url = f"{CONTACTS}/{path.format(id=created['id'])}"
    express, routed = [seen(await client.get(url, headers=auth)) for client in pair]
    assert express == routed
    assert express[0] in (200, 404, 422)


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("", SEED),
        ("", {**SEED, "phones": ["+1 555 0100"]}),  # merges into the first
        ("?on_conflict=error", SEED),
        ("?on_conflict=sometimes", SEED),
        ("?surprise=1", SEED),
        ("", {"emails": ["not-an-email"]}),
        ("", {"emails": []}),
        ("", {"emails": ["new@example.com"], "custom_fields": {"profile_field_1": "x"}}),
        ("", [1, 2]),
    ],
)
async def test_creates_are_answered_alike(
    pair: list[httpx.AsyncClient], db: Database, query: str, body: Any
) -> None:
    """Each app in turn creates in a Space of its own, so that both meet the same state."""
    answers: list[tuple[int, dict[str, str], Any]] = []
    for client in pair:
        auth = await make_tenant(db, name=f"Space {len(answers)}")
        await client.post(CONTACTS, json=SEED, headers=auth)
        answers.append(seen(await client.post(CONTACTS + query, json=body, headers=auth)))
    assert answers[0] == answers[1]


async def test_refusals_before_the_endpoint_are_answered_alike(
    pair: list[httpx.AsyncClient], db: Database
) -> None:
    space_id = await make_space(db)
    read_only = bearer(await make_key(db, space_id, ["contacts:read"]))
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"{CONTACTS}/1", {}),
        ("GET", f"{CONTACTS}/1", {"headers": {"Authorization": "Bearer cb_nope"}}),
        ("GET", f"{CONTACTS}/1", {"headers": {"Authorization": "Basic abc"}}),
        ("POST", CONTACTS, {"json": SEED, "headers": read_only}),
        ("HEAD", f"{CONTACTS}/1", {"headers": read_only}),
        ("DELETE", f"{CONTACTS}/1", {"headers": read_only}),
        ("POST", CONTACTS, {"content": b"{", "headers": read_only}),
    ]
    for method, url, extra in requests:
        express, routed = [seen(await c.request(method, url, **extra)) for c in pair]
        assert express == routed, (method, url)

"""Small typed factories for test data, made through the same services the CLI uses."""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from fastapi import FastAPI, Request
from sqlalchemy import func, select, text

from contactbase.contacts.models import VALUE_TABLES, Contact
from contactbase.db import Database, Lease
from contactbase.ratelimit import ENDPOINTS
from contactbase.spaces import access, service
from contactbase.spaces.service import PERMISSIONS, Caller
from contactbase.state import state_of
from contactbase.webhooks import service as webhooks

CONTACTS = "/public-api/v1/contacts"
SEED = {
    "emails": ["john@example.com", "johnny@example.com"],
    "phones": ["+1234567890", "+0987654321"],
    "names": ["John Doe", "Johnny"],
    "locations": ["New York, NY", "Los Angeles, CA"],
}


# Limits high enough that tests of other behaviour never meet them; rate-limit tests pass
# `limits={}` to get the defaults.
RAISED_LIMITS = dict.fromkeys(ENDPOINTS, 100_000)


async def make_space(
    db: Database,
    name: str = "Acme",
    timezone: str = "UTC",
    limits: Mapping[str, int] = RAISED_LIMITS,
) -> int:
    async with db.writer() as session, session.begin():
        space = await service.create_space(session, name, timezone)
        for endpoint, per_minute in limits.items():
            await service.set_limit(session, space.id, endpoint, per_minute)
        return space.id


async def make_key(db: Database, space_id: int, permissions: Sequence[str] = PERMISSIONS) -> str:
    async with db.writer() as session, session.begin():
        _key, raw_key = await service.create_key(session, space_id, "test", permissions)
        return raw_key


async def make_tenant(
    db: Database,
    name: str = "Acme",
    timezone: str = "UTC",
    limits: Mapping[str, int] = RAISED_LIMITS,
) -> dict[str, str]:
    """A new Space with a read-write key: the Authorization header to use it."""
    space_id = await make_space(db, name, timezone, limits)
    return bearer(await make_key(db, space_id))


async def add_contact(
    client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    """Create (or merge) a contact through the API: its ContactDetail."""
    response = await client.post(CONTACTS, json=body, headers=auth)
    assert response.status_code in (200, 201), response.text
    detail: dict[str, Any] = response.json()
    return detail


async def table_counts(db: Database) -> dict[str, int]:
    """Rows in the contacts table and in each value table (by collection)."""
    async with db.reader() as session:
        counts = {"contacts": await session.scalar(select(func.count()).select_from(Contact))}
        for kind, table in VALUE_TABLES.items():
            counts[kind] = await session.scalar(select(func.count()).select_from(table))
    return {name: int(count or 0) for name, count in counts.items()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# The code each error status answers with (SPEC 6.1); 403 and 503 have several.
ERROR_CODES = {
    401: {"unauthenticated"},
    403: {"space_inactive", "permission_missing", "download_link_invalid"},
    404: {"not_found"},
    405: {"method_not_allowed"},
    409: {"conflict", "idempotency_in_flight"},
    410: {"changes_expired"},
    413: {"payload_too_large"},
    422: {"validation_failed", "idempotency_mismatch"},
    429: {"rate_limited", "too_many_exports"},
    431: {"headers_too_large"},
    500: {"internal_error"},
    503: {"database_unavailable", "schema_outdated", "overloaded"},
}


def answered(response: httpx.Response) -> Any:
    """The JSON body; for an error, after checking its `code` (one of its status's) and its
    `request_id` (the response's X-Request-Id), without those two, so that a test can compare
    the rest of the body exactly."""
    body = response.json()
    if response.status_code >= 400 and isinstance(body, dict):
        assert body.pop("request_id") == response.headers["x-request-id"]
        assert body.pop("code") in ERROR_CODES[response.status_code], response.text
    return body


async def until_waiting_on_a_lock(app: FastAPI, db: Database, waiting: int = 1) -> None:
    """Return once `waiting` requests of `app` wait on a lock that the test holds, so that a
    race the test stages certainly happens: on PostgreSQL backends waiting for a lock; on
    SQLite the app's writer retrying BEGIN IMMEDIATE behind the test's transaction, and the
    other requests queued behind it. Fails after 10 seconds."""
    embedded = state_of(app).db.embedded
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    for _ in range(1000):
        if embedded is not None:
            if embedded.writer_waiting and embedded.pending >= waiting:
                return
        else:
            async with db.reader() as session:
                if (await session.scalar(query) or 0) >= waiting:
                    return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{waiting} request(s) did not come to wait within 10 seconds")


async def authorised(request: Request) -> Caller:
    """For a test's own route: the caller, authorised as the public API's GET is."""
    state = state_of(request)
    lease = Lease(state.db)
    try:
        return await access.authorise(state, request, lease, access.GET)
    finally:
        await lease.release()


async def make_endpoint(
    db: Database, space_id: int, url: str, events: Sequence[str] = ()
) -> tuple[int, str]:
    """A webhook endpoint (private addresses allowed: receivers run on 127.0.0.1): its id and
    its secret."""
    async with db.writer() as session, session.begin():
        endpoint, secret = await webhooks.create_endpoint(
            session, space_id, url, events, allow_private=True
        )
        return endpoint.id, secret

"""POST /contacts/exports and GET /contacts/exports/{id}: queueing, polling and the signed link.

The worker is driven by hand (`state_of(app).exports.run_once()`), so each step can be observed."""

import asyncio
import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from contactbase.contacts.exports import sign_download
from contactbase.db import Database, Lease
from contactbase.derived_keys import DOWNLOADS, derive
from contactbase.spaces.service import signing_secret
from contactbase.state import state_of
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

EXPORTS = f"{CONTACTS}/exports"
WIRE = "%Y-%m-%dT%H:%M:%SZ"
LOCAL = "%Y-%m-%d %H:%M:%S"
ALL_TIME = {"start_date": "2000-01-01 00:00:00", "end_date": "2099-12-31 23:59:59"}
QUEUED = "The export is queued."
REFUSED = {"message": "This download link is invalid or has expired."}
LINE_KEYS = ["id", "email", "name", "phone", "location", "created_at"]
Auth = dict[str, str]


async def queue(client: httpx.AsyncClient, auth: Auth, window: dict[str, str] = ALL_TIME) -> str:
    response = await client.post(EXPORTS, json=window, headers=auth)
    assert response.status_code == 202, response.text
    export_id: str = response.json()["export_id"]
    return export_id


async def poll(client: httpx.AsyncClient, auth: Auth, export_id: str) -> dict[str, Any]:
    response = await client.get(f"{EXPORTS}/{export_id}", headers=auth)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


async def download(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    """The lines of the file behind a download link, fetched without a key."""
    response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert response.content[:2] == b"\x1f\x8b"
    text = gzip.decompress(response.content).decode()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def export(
    client: httpx.AsyncClient, app: FastAPI, auth: Auth, window: dict[str, str] = ALL_TIME
) -> list[dict[str, Any]]:
    """Queue an export, let the worker write it, and read the file back."""
    export_id = await queue(client, auth, window)
    assert await state_of(app).exports.run_once() is True
    status = await poll(client, auth, export_id)
    assert status["status"] == "completed", status
    return await download(client, status["download_url"])


def line(detail: dict[str, Any]) -> dict[str, Any]:
    """The export line expected for a contact: its primary values."""

    def primary(values: list[str]) -> str | None:
        return values[0] if values else None

    return {
        "id": detail["id"],
        "email": detail["emails"][0],
        "name": primary(detail["names"]),
        "phone": primary(detail["phones"]),
        "location": primary(detail["locations"]),
        "created_at": detail["created_at"],
    }


def moment(wire: str) -> datetime:
    return datetime.strptime(wire, WIRE).replace(tzinfo=UTC)


def local(at: datetime, timezone: str) -> str:
    return at.astimezone(ZoneInfo(timezone)).strftime(LOCAL)


def invalid(errors: dict[str, str]) -> dict[str, Any]:
    messages = list(errors.values())
    more = len(messages) - 1
    summary = messages[0] + (f" (and {more} more error{'s' if more > 1 else ''})" if more else "")
    return {"message": summary, "errors": {field: [text] for field, text in errors.items()}}


def headers(responses: list[httpx.Response], name: str) -> list[str]:
    return [response.headers[name] for response in responses]


async def the_signing_key(db: Database) -> bytes:
    lease = Lease(db)
    try:
        return derive(await signing_secret(await lease.connect()), DOWNLOADS)
    finally:
        await lease.release()


async def test_queueing_answers_202_and_polling_shows_queued(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    before = datetime.now(UTC).replace(microsecond=0)
    response = await client.post(EXPORTS, json=ALL_TIME, headers=auth)
    after = datetime.now(UTC)
    assert response.status_code == 202
    body = response.json()
    assert isinstance(body["export_id"], str)
    assert body == {"export_id": body["export_id"], "status": "queued", "message": QUEUED}
    status = await poll(client, auth, body["export_id"])
    assert status == {
        "export_id": body["export_id"],
        "status": "queued",
        "created_at": status["created_at"],
        "message": QUEUED,
    }
    assert before <= moment(status["created_at"]) <= after


async def test_a_completed_export_has_a_signed_link_for_15_minutes(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    auth = await make_tenant(db)
    export_id = await queue(client, auth)
    queued = await poll(client, auth, export_id)
    assert await state_of(app).exports.run_once() is True
    assert await state_of(app).exports.run_once() is False
    status = await poll(client, auth, export_id)
    url = status["download_url"]
    assert status == {
        "export_id": export_id,
        "status": "completed",
        "created_at": queued["created_at"],
        "download_url": url,
        "completed_at": status["completed_at"],
        "expires_at": status["expires_at"],
    }
    completed_at, expires_at = moment(status["completed_at"]), moment(status["expires_at"])
    assert expires_at - completed_at == timedelta(minutes=15)
    assert moment(queued["created_at"]) <= completed_at <= datetime.now(UTC)
    expires = int(expires_at.timestamp())
    signature = sign_download(await the_signing_key(db), export_id, expires)
    query = urlencode({"expires": expires, "signature": signature})
    assert url == f"http://testserver{EXPORTS}/{export_id}/download?{query}"
    assert await download(client, url) == []


async def test_the_file_has_one_line_per_contact_of_the_space_with_primary_values(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    auth, other = await make_tenant(db, "Acme"), await make_tenant(db, "Other")
    full = await add_contact(client, auth, SEED)
    bare = await add_contact(client, auth, {"emails": ["solo@example.com"]})
    survivor = await add_contact(client, auth, {"emails": ["ann@example.com"], "names": ["Ann"]})
    alias = await add_contact(
        client, auth, {"emails": ["bo@example.com"], "phones": ["+44 20 7946"]}
    )
    merged = await add_contact(client, auth, {"emails": ["bo@example.com", "ann@example.com"]})
    assert merged["id"] == survivor["id"] < alias["id"]
    await add_contact(client, other, {"emails": ["john@example.com"], "names": ["Not Acme"]})
    lines = await export(client, app, auth)
    assert lines == [line(full), line(bare), line(merged)]
    assert [list(item) for item in lines] == [LINE_KEYS] * 3
    assert lines[0] == {
        "id": full["id"],
        "email": "john@example.com",
        "name": "John Doe",
        "phone": "+1234567890",
        "location": "New York, NY",
        "created_at": full["created_at"],
    }
    assert lines[1]["name"] is lines[1]["phone"] is lines[1]["location"] is None
    assert lines[2]["phone"] == "+44 20 7946"  # the survivor's empty primary was filled


async def test_the_window_is_inclusive_and_in_the_space_timezone(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    zone = "Asia/Kolkata"  # UTC+05:30: a window read as UTC would miss every contact
    auth = await make_tenant(db, timezone=zone)
    first = await add_contact(client, auth, {"emails": ["first@example.com"]})
    t1 = moment(first["created_at"])
    await asyncio.sleep(max(0.0, t1.timestamp() + 1.05 - time.time()))  # the next second has begun
    second = await add_contact(client, auth, {"emails": ["second@example.com"]})
    t2 = moment(second["created_at"])
    assert t2 > t1
    one = timedelta(seconds=1)

    def window(start: datetime, end: datetime, timezone: str = zone) -> dict[str, str]:
        return {"start_date": local(start, timezone), "end_date": local(end, timezone)}

    assert await export(client, app, auth, window(t1, t1)) == [line(first)]
    assert await export(client, app, auth, window(t2, t2)) == [line(second)]
    assert await export(client, app, auth, window(t1, t2)) == [line(first), line(second)]
    assert await export(client, app, auth, window(t1 - one, t2 - one)) == [line(first)]
    assert await export(client, app, auth, window(t1 + one, t2 + one)) == [line(second)]
    assert await export(client, app, auth, window(t1 - timedelta(hours=1), t1 - one)) == []
    assert await export(client, app, auth, window(t2 + one, t2 + timedelta(hours=1))) == []
    assert await export(client, app, auth, window(t1, t2, "UTC")) == []


async def test_both_dates_are_required(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    start, end = "The start_date field is required.", "The end_date field is required."
    cases: list[tuple[dict[str, Any], dict[str, str]]] = [
        ({}, {"start_date": start, "end_date": end}),
        ({"end_date": "2026-11-30 23:59:59"}, {"start_date": start}),
        ({"start_date": "2026-11-01 00:00:00"}, {"end_date": end}),
    ]
    for body, errors in cases:
        response = await client.post(EXPORTS, json=body, headers=auth)
        assert response.status_code == 422, body
        assert answered(response) == invalid(errors)


def bad_format(field: str, shown: str) -> dict[str, str]:
    return {field: f"The {field} field must match the format YYYY-MM-DD HH:MM:SS ({shown})."}


START, END = "2026-11-01 00:00:00", "2026-11-30 23:59:59"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param(
            {"start_date": "2026-11-01", "end_date": END},
            bad_format("start_date", '"2026-11-01"'),
            id="date-only",
        ),
        pytest.param(
            {"start_date": START, "end_date": "2026-11-30T23:59:59"},
            bad_format("end_date", '"2026-11-30T23:59:59"'),
            id="iso-t",
        ),
        pytest.param(
            {"start_date": "2026-13-01 00:00:00", "end_date": "2026-11-31 00:00:00"},
            bad_format("start_date", '"2026-13-01 00:00:00"')
            | bad_format("end_date", '"2026-11-31 00:00:00"'),
            id="no-such-day",
        ),
        pytest.param(
            {"start_date": START, "end_date": "2026-12-1 00:00:00"},
            bad_format("end_date", '"2026-12-1 00:00:00"'),
            id="one-digit-day",
        ),
        pytest.param(
            {"start_date": "2026-11-01\t00:00:00", "end_date": END},
            bad_format("start_date", '"2026-11-01\\t00:00:00"'),
            id="tab-separator",
        ),
        pytest.param(
            {"start_date": START, "end_date": "\uff12\uff10\uff12\uff16-11-30 23:59:59"},
            bad_format("end_date", '"\uff12\uff10\uff12\uff16-11-30 23:59:59"'),
            id="fullwidth-digits",
        ),
        pytest.param(
            {"start_date": "2026-11-30 00:00:00", "end_date": "2026-11-29 23:59:59"},
            {
                "end_date": "The end_date field must be a date after or equal to start_date "
                '("2026-11-29 23:59:59").'
            },
            id="end-before-start",
        ),
        pytest.param(
            {**ALL_TIME, "timezone": "UTC"},
            {"timezone": "The timezone field is not allowed."},
            id="unknown-field",
        ),
        pytest.param(
            {"start_date": None, "end_date": END},
            {"start_date": "The start_date field must not be null."},
            id="null",
        ),
        pytest.param(
            {"start_date": START, "end_date": 20261130},
            {"end_date": "The end_date field must be a string (20261130)."},
            id="not-a-string",
        ),
    ],
)
async def test_invalid_windows_are_422(
    client: httpx.AsyncClient, db: Database, body: dict[str, Any], errors: dict[str, str]
) -> None:
    auth = await make_tenant(db)
    response = await client.post(EXPORTS, json=body, headers=auth)
    assert response.status_code == 422
    assert answered(response) == invalid(errors)


async def test_exports_need_the_read_permission(client: httpx.AsyncClient, db: Database) -> None:
    space_id = await make_space(db)
    export_id = await queue(client, bearer(await make_key(db, space_id)))
    write_only = bearer(await make_key(db, space_id, ["contacts:write"]))
    lacks = {"message": "This API key lacks the contacts:read permission."}
    refused = await client.post(EXPORTS, json=ALL_TIME, headers=write_only)
    assert (refused.status_code, answered(refused)) == (403, lacks)
    polled = await client.get(f"{EXPORTS}/{export_id}", headers=write_only)
    assert (polled.status_code, answered(polled)) == (403, lacks)
    assert (await client.post(EXPORTS, json=ALL_TIME)).status_code == 401


async def test_creation_counts_against_export_and_polling_against_get(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = bearer(await make_key(db, await make_space(db, limits={"export": 2, "get": 3})))
    made = [await client.post(EXPORTS, json=ALL_TIME, headers=auth) for _ in range(3)]
    assert [response.status_code for response in made] == [202, 202, 429]
    assert headers(made, "X-RateLimit-Limit") == ["2"] * 3
    assert headers(made, "X-RateLimit-Remaining") == ["1", "0", "0"]
    assert made[2].json()["message"].startswith("Too many export requests")
    assert 1 <= int(made[2].headers["Retry-After"]) <= 60
    export_id = made[0].json()["export_id"]
    polls = [await client.get(f"{EXPORTS}/{export_id}", headers=auth) for _ in range(4)]
    assert [response.status_code for response in polls] == [200, 200, 200, 429]
    assert headers(polls, "X-RateLimit-Limit") == ["3"] * 4
    assert headers(polls, "X-RateLimit-Remaining") == ["2", "1", "0", "0"]


async def test_unknown_and_foreign_exports_are_404(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    auth, other = await make_tenant(db, "Acme"), await make_tenant(db, "Other")
    export_id = await queue(client, auth)
    shown = {
        "no-such-export": "no-such-export",
        "00000000-0000-0000-0000-000000000000": "00000000-0000-0000-0000-000000000000",
        "é": "é",
        "nul\x00": '"nul\\u0000"',  # an unprintable id is quoted, escaped
    }
    for unknown, echoed in shown.items():
        response = await client.get(f"{EXPORTS}/{quote(unknown, safe='')}", headers=auth)
        assert (response.status_code, answered(response)) == (
            404,
            {"message": f"No export with id {echoed}."},
        )
    assert await state_of(app).exports.run_once() is True
    foreign = await client.get(f"{EXPORTS}/{export_id}", headers=other)
    assert foreign.status_code == 404
    assert answered(foreign) == {"message": f"No export with id {export_id}."}
    assert (await poll(client, auth, export_id))["status"] == "completed"


@pytest.mark.parametrize(
    ("timezone", "window"),
    [
        pytest.param("UTC", {"start_date": START, "end_date": "9999-12-31 23:59:59"}, id="9999"),
        pytest.param(
            "Asia/Kolkata", {"start_date": "0001-01-01 00:00:00", "end_date": END}, id="0001"
        ),
    ],
)
async def test_windows_at_the_ends_of_the_calendar_are_accepted(
    client: httpx.AsyncClient, app: FastAPI, db: Database, timezone: str, window: dict[str, str]
) -> None:
    auth = await make_tenant(db, timezone=timezone)
    response = await client.post(EXPORTS, json=window, headers=auth)
    assert response.status_code == 202, response.text
    assert await state_of(app).exports.run_once() is True
    assert (await poll(client, auth, response.json()["export_id"]))["status"] == "completed"

"""Hostile input through the real HTTP app: oversized, deep, wide and mislabelled bodies, bad
bytes in headers, bodies, queries and paths. Each is refused with a 4xx JSON answer, never a
5xx, and no error body carries a stack trace."""

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import text
from starlette.types import Message

from contactbase.app import close, create_app
from contactbase.db import Database, transaction
from contactbase.settings import Settings
from contactbase.state import state_of
from tests.factories import (
    CONTACTS,
    SEED,
    answered,
    authorised,
    bearer,
    make_key,
    make_space,
    make_tenant,
)

Auth = dict[str, str]
EXPORTS = f"{CONTACTS}/exports"
ALL_TIME = {"start_date": "2000-01-01 00:00:00", "end_date": "2099-12-31 23:59:59"}
SMALL = 2048
TOO_LARGE = {"message": f"The request body is larger than {SMALL} bytes."}
UNAUTHENTICATED = {"message": "Unauthenticated."}
FRESH_ID = r"[0-9a-f]{32}"
# (method, path, a valid body) of every endpoint that reads a body.
WITH_BODY: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", CONTACTS, {"emails": ["a@example.com"]}),
    ("PUT", f"{CONTACTS}/1", {"names": ["A"]}),
    ("POST", EXPORTS, ALL_TIME),
]
SUCCESS = {"POST": 201, "PUT": 200}
STACK_TRACE_MARKS = ("Traceback", 'File "', ".py", "site-packages", "sqlalchemy", "asyncpg")


def one_error(field: str, message: str) -> dict[str, Any]:
    return {"message": message, "errors": {field: [message]}}


def invalid_json(reason: str) -> dict[str, Any]:
    return one_error("body", f"The request body must be valid JSON ({reason}).")


def success(method: str, path: str) -> int:
    return 202 if path == EXPORTS else SUCCESS[method]


async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await close(app)


@pytest.fixture
async def auth(client: httpx.AsyncClient, db: Database) -> Auth:
    """A Space's read-write key, and its contact 1 (for the PUTs)."""
    headers = await make_tenant(db)
    assert (await client.post(CONTACTS, json=SEED, headers=headers)).status_code == 201
    return headers


@pytest.fixture
async def small(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that accepts bodies of at most 2,048 bytes."""
    async for http in serve(create_app(settings.model_copy(update={"max_body_bytes": SMALL}))):
        yield http


async def chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 500):
        yield body[start : start + 500]


@pytest.mark.parametrize(("method", "path", "valid"), WITH_BODY)
async def test_a_small_body_limit_from_the_settings_is_enforced_first(
    small: httpx.AsyncClient, auth: Auth, method: str, path: str, valid: dict[str, Any]
) -> None:
    exact = json.dumps(valid).encode().ljust(SMALL)
    accepted = await small.request(method, path, content=exact, headers=auth)
    assert accepted.status_code == success(method, path), accepted.text
    over = exact + b" "
    for headers in (auth, {}, bearer("cb_" + "A" * 43)):
        response = await small.request(method, path, content=over, headers=headers)
        assert (response.status_code, answered(response)) == (413, TOO_LARGE)
        streamed = await small.request(method, path, content=chunks(over), headers=headers)
        assert "content-length" not in streamed.request.headers
        assert (streamed.status_code, answered(streamed)) == (413, TOO_LARGE)
    declared = {**auth, "Content-Length": str(SMALL + 1)}
    response = await small.request(method, path, content=b"x" * (SMALL + 1), headers=declared)
    assert (response.status_code, answered(response)) == (413, TOO_LARGE)


async def test_a_body_on_a_get_counts_against_the_limit(
    small: httpx.AsyncClient, auth: Auth
) -> None:
    response = await small.request("GET", CONTACTS, content=b"x" * (SMALL + 1), headers=auth)
    assert (response.status_code, answered(response)) == (413, TOO_LARGE)
    assert (await small.request("GET", CONTACTS, content=b"x" * SMALL, headers=auth)).is_success


Case = tuple[dict[str, Any], str, str]


def body_for(field: str, value: str) -> dict[str, Any]:
    """`names.0` -> {"names": [value]}; `custom_fields.slot` -> {"custom_fields": {slot: value}}."""
    kind, rest = field.split(".")
    return {kind: {rest: value}} if kind == "custom_fields" else {kind: [value]}


def too_many(kind: str, value: str) -> Case:
    message = f"The {kind} field must not have more than 100 items (101 sent)."
    return {kind: [value] * 101}, kind, message


def too_long(field: str, value: str, limit: int) -> Case:
    shown = value[:60] + "…" if len(value) > 60 else value
    message = f'The {field} field must not be greater than {limit} characters ("{shown}").'
    return body_for(field, value), field, message


def control(field: str, value: str, shown: str) -> Case:
    message = f"The {field} field must not contain control characters ({shown})."
    return body_for(field, value), field, message


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        too_many("emails", "a@example.com"),
        too_many("phones", "+1234567890"),
        too_many("names", "A"),
        too_many("locations", "B"),
        too_long("names.0", "n" * 256, 255),
        too_long("locations.0", "l" * 256, 255),
        too_long("emails.0", "e" * 64 + "@" + "d" * 186 + ".com", 254),
        too_long("phones.0", "1" * 33, 32),
        too_long("custom_fields.profile_field_3", "t" * 10_241, 10_240),
        control("names.0", "A\x00B", '"A\\u0000B"'),
        control("locations.0", "A\x1bB", '"A\\u001bB"'),
        control("custom_fields.profile_field_1", "x\x00", '"x\\u0000"'),
    ],
)
async def test_an_update_over_the_limits_is_422_and_changes_nothing(
    client: httpx.AsyncClient, auth: Auth, body: dict[str, Any], field: str, message: str
) -> None:
    before = (await client.get(f"{CONTACTS}/1", headers=auth)).json()
    response = await client.put(f"{CONTACTS}/1", json=body, headers=auth)
    assert (response.status_code, answered(response)) == (422, one_error(field, message))
    assert (await client.get(f"{CONTACTS}/1", headers=auth)).json() == before


async def test_long_query_values_are_refused_or_match_nothing(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    long = "c" * 60_000
    response = await client.get(CONTACTS, params={"cursor": long}, headers=auth)
    message = f'The cursor field is not a valid cursor ("{"c" * 60}…").'
    assert (response.status_code, answered(response)) == (422, one_error("cursor", message))
    response = await client.get(CONTACTS, params={"start_date": long}, headers=auth)
    message = f'The start_date field must match the format YYYY-MM-DD HH:MM:SS ("{"c" * 60}…").'
    assert (response.status_code, answered(response)) == (422, one_error("start_date", message))
    for look_up in ("email", "phone"):
        response = await client.get(CONTACTS, params={look_up: "1" * 60_000}, headers=auth)
        assert (response.status_code, response.json()["data"]) == (200, [])
    response = await client.get(CONTACTS, params={"per_page": "9" * 5000}, headers=auth)
    assert (response.status_code, answered(response)) == (
        422,
        one_error("per_page", "The per_page field is invalid."),
    )


DEEP_ARRAYS = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECTS = b'{"a":' * 50_000 + b"1" + b"}" * 50_000


@pytest.mark.parametrize(("method", "path", "valid"), WITH_BODY)
@pytest.mark.parametrize(
    ("field", "nested"),
    [("names", DEEP_ARRAYS), ("custom_fields", DEEP_OBJECTS), ("start_date", DEEP_ARRAYS)],
)
async def test_deep_nesting_is_422(
    client: httpx.AsyncClient,
    auth: Auth,
    method: str,
    path: str,
    valid: dict[str, Any],
    field: str,
    nested: bytes,
) -> None:
    """100,000 nested arrays or 50,000 nested objects inside a field: the parser's limit."""
    body = b'{"' + field.encode() + b'": ' + nested + b"}"
    response = await client.request(method, path, content=body, headers=auth)
    assert response.status_code == 422
    column = len(field) + 5 + (201 if nested is DEEP_ARRAYS else 1001)
    assert answered(response) == invalid_json(f"recursion limit exceeded at line 1 column {column}")


async def test_many_keys_in_an_object_are_422(client: httpx.AsyncClient, auth: Auth) -> None:
    """50,000 unknown keys, at the top or in custom_fields: each named in the 422, none stored."""
    for method, path, valid in WITH_BODY:
        wide = {**valid, **{f"k{n}": 1 for n in range(50_000)}}
        response = await client.request(method, path, json=wide, headers=auth)
        assert response.status_code == 422
        errors = response.json()["errors"]
        assert len(errors) == 100  # the first 100 are listed; the summary counts them all
        assert errors["k99"] == ["The k99 field is not allowed."]
        assert response.json()["message"] == "The k0 field is not allowed. (and 49999 more errors)"
    slots = {f"profile_field_{n}": "x" for n in range(1, 16)} | {f"x{n}": 1 for n in range(50_000)}
    response = await client.post(CONTACTS, json={**SEED, "custom_fields": slots}, headers=auth)
    assert response.status_code == 422
    assert len(response.json()["errors"]) == 100
    listed = (await client.get(CONTACTS, headers=auth)).json()["data"]
    assert [item["id"] for item in listed] == [1]


@pytest.mark.parametrize(("method", "path", "valid"), WITH_BODY)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_a_json_body_is_read_whatever_its_content_type(
    client: httpx.AsyncClient,
    auth: Auth,
    method: str,
    path: str,
    valid: dict[str, Any],
    content_type: str | None,
) -> None:
    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    response = await client.request(method, path, content=json.dumps(valid), headers=headers)
    assert response.status_code == success(method, path)
    assert response.headers["content-type"] == "application/json"


NOT_JSON: list[tuple[dict[str, Any], str]] = [
    ({"data": {"emails": "a@example.com"}}, "expected value at line 1 column 1"),
    ({"files": {"emails": ("a.txt", b"a@example.com")}}, "invalid number at line 1 column 2"),
    (
        {"content": b"<emails>a@example.com</emails>", "headers": {"Content-Type": "text/xml"}},
        "expected value at line 1 column 1",
    ),
    ({"content": "emails=a@example.com".encode("utf-16")}, "expected value at line 1 column 1"),
    (
        {"content": b'\xef\xbb\xbf{"emails": ["a@example.com"]}'},
        "expected value at line 1 column 1",
    ),
]


@pytest.mark.parametrize(("method", "path", "valid"), WITH_BODY)
@pytest.mark.parametrize(("sent", "reason"), NOT_JSON)
async def test_a_body_that_is_not_json_is_422(
    client: httpx.AsyncClient,
    auth: Auth,
    method: str,
    path: str,
    valid: dict[str, Any],
    sent: dict[str, Any],
    reason: str,
) -> None:
    """Form fields, multipart, XML, UTF-16, a BOM: 422, with the parser's reason."""
    extra = sent.get("headers", {})
    arguments = {key: value for key, value in sent.items() if key != "headers"}
    response = await client.request(method, path, headers={**auth, **extra}, **arguments)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert answered(response) == invalid_json(reason)


BAD_CODE_POINT = "invalid unicode code point"
# A value's bytes, the parser's reason, and where in the value the parser stops (1-based).
BAD_BYTES = [
    (b"\xff@example.com", BAD_CODE_POINT, 1),
    (b"\xc0\xaf@example.com", BAD_CODE_POINT, 1),  # an overlong "/"
    (b"a\xc0\x80@example.com", BAD_CODE_POINT, 2),  # an overlong NUL
    (b"\xed\xb0\x80@example.com", BAD_CODE_POINT, 1),  # a surrogate encoded as UTF-8
    (b"\xf8\x88\x80\x80\x80", BAD_CODE_POINT, 1),  # a five-byte sequence
    (b"\\udfff@example.com", "lone leading surrogate in hex escape", 6),
    (b"\\ud800@example.com", "unexpected end of hex escape", 7),
]


@pytest.mark.parametrize(("value", "reason", "offset"), BAD_BYTES)
async def test_invalid_utf8_and_lone_surrogates_are_422(
    client: httpx.AsyncClient, auth: Auth, value: bytes, reason: str, offset: int
) -> None:
    for method, path, field in (
        ("POST", CONTACTS, "emails"),
        ("PUT", f"{CONTACTS}/1", "names"),
        ("POST", EXPORTS, "start_date"),
    ):
        body = b'{"' + field.encode() + b'": ["' + value + b'"]}'
        response = await client.request(method, path, content=body, headers=auth)
        column = len(field) + 7 + offset
        expected = invalid_json(f"{reason} at line 1 column {column}")
        assert (response.status_code, answered(response)) == (422, expected), (method, path)


REQUEST_IDS = [b"a\x00b", b"\x01", b"tab\tx", b"\x7f", "é".encode(), b"\xff\xfe", b"x" * 129, b""]
KEYS = [
    b"Bearer cb_\x00" + b"A" * 42,
    b"Bearer cb_" + "\u00e9".encode() * 43,
    b"Bearer cb_" + b"\xff" * 43,
    b"Bearer \x7f",
    b"Bearer\xa0cb_" + b"A" * 43,
    b"Bearer cb_" + b"A" * 40 + b"\x1b[0m",
]


async def test_control_and_non_ascii_bytes_in_headers(
    client: httpx.AsyncClient, db: Database
) -> None:
    """The request id is replaced, never echoed; a key made of odd bytes is a 401."""
    key = await make_key(db, await make_space(db))
    auth = (b"authorization", f"Bearer {key}".encode())
    for sent in REQUEST_IDS:
        response = await client.get(CONTACTS, headers=[(b"x-request-id", sent), auth])
        assert response.status_code == 200
        assert re.fullmatch(FRESH_ID, response.headers["x-request-id"]), sent
    for raw in [*KEYS, f"Bearer {key}\x00".encode(), f"Bearer {key}\xe9".encode("latin-1")]:
        response = await client.get(CONTACTS, headers=[(b"authorization", raw)])
        assert (response.status_code, answered(response)) == (401, UNAUTHENTICATED), raw
        assert re.fullmatch(FRESH_ID, response.headers["x-request-id"])


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        (CONTACTS, {"email": "a\x00@example.com"}, 422),
        (CONTACTS, {"phone": "+1\x00234"}, 422),
        (CONTACTS, {"cursor": "\x00"}, 422),
        (CONTACTS, {"start_date": "2026-01-01\x0000:00:00"}, 422),
        (f"{EXPORTS}/%00", {}, 404),
        (f"{EXPORTS}/a%00b", {}, 404),
        (f"{CONTACTS}/1%00", {}, 422),
        (f"{EXPORTS}/%00/download", {"expires": "1", "signature": "\x00"}, 403),
    ],
)
async def test_nul_in_queries_and_paths_is_never_5xx(
    client: httpx.AsyncClient, auth: Auth, path: str, params: dict[str, str], expected: int
) -> None:
    """PostgreSQL cannot hold NUL: such a value must be refused or match nothing, on both
    databases alike."""
    response = await client.get(path, params=params, headers=auth)
    assert response.status_code == expected, response.text
    if expected == 200:
        assert response.json()["data"] == []


@pytest.fixture
async def failing(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """An app with two routes that fail: a Python error, and a database constraint."""
    app = create_app(settings)

    @app.get("/boom")
    async def boom(request: Request) -> None:
        await authorised(request)
        raise RuntimeError("/srv/contactbase/secret.py line 12: token=hunter2")

    @app.get("/boom-sql")
    async def boom_sql(request: Request) -> None:
        await authorised(request)
        async with transaction(state_of(request).db, write=True) as session:
            await session.execute(text("INSERT INTO spaces (name) VALUES ('hunter2')"))

    async for http in serve(app):
        yield http


async def test_error_bodies_never_carry_a_stack_trace(
    failing: httpx.AsyncClient, db: Database
) -> None:
    space_id = await make_space(db, limits={"create": 1, "get": 1000, "list": 1000})
    key = await make_key(db, space_id)
    read_only = bearer(await make_key(db, space_id, ["contacts:read"]))
    auth = bearer(key)
    # The one create the limit allows (a limit of 0 is refused: set-limit), so the next is a 429.
    assert (
        await failing.post(CONTACTS, json={"emails": ["first@example.com"]}, headers=auth)
    ).status_code == 201
    responses = {
        "401": await failing.get(CONTACTS),
        "403": await failing.put(f"{CONTACTS}/1", json={"names": ["X"]}, headers=read_only),
        "404": await failing.get(f"{CONTACTS}/99", headers=auth),
        "404 route": await failing.get("/nowhere.py"),
        "405": await failing.delete(CONTACTS, headers=auth),
        "413": await failing.post(CONTACTS, content=b"x" * (1024 * 1024 + 1), headers=auth),
        "422": await failing.post(EXPORTS, content=b"{", headers=auth),
        "429": await failing.post(CONTACTS, json=SEED, headers=auth),
        "500": await failing.get("/boom", headers=auth),
        "500 sql": await failing.get("/boom-sql", headers=auth),
    }
    assert {name: r.status_code for name, r in responses.items()} == {
        name: int(name[:3]) for name in responses
    }
    for name, response in responses.items():
        assert response.headers["content-type"] == "application/json", name
        body = response.json()
        assert isinstance(body["message"], str), name
        assert body["message"], name
        for mark in (*STACK_TRACE_MARKS, "hunter2", "INSERT", "/srv"):
            assert mark not in response.text, (name, mark)
    for name in ("500", "500 sql"):
        assert answered(responses[name]) == {"message": "Internal server error."}
    async with db.reader() as session:  # the failed insert was rolled back
        assert (await session.execute(text("SELECT count(*) FROM spaces"))).scalar_one() == 1


async def test_a_body_cut_short_by_a_disconnect_is_not_acted_on(
    app: FastAPI, client: httpx.AsyncClient, auth: Auth
) -> None:
    """Half a body that happens to be valid JSON, then the client goes: nothing is stored."""
    body = json.dumps({"emails": ["cut@example.com"]}).encode()
    messages: list[Message] = [
        {"type": "http.request", "body": body, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [
        (b"authorization", auth["Authorization"].encode()),
        (b"host", b"testserver"),
        (b"content-type", b"application/json"),
        (b"content-length", b"100000"),
    ]
    scope = {
        "type": "http",
        "method": "POST",
        "path": CONTACTS,
        "raw_path": CONTACTS.encode(),
        "query_string": b"",
        "headers": headers,
        "http_version": "1.1",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    await app(scope, receive, send)
    assert sent == []
    listed = await client.get(CONTACTS, headers=auth, params={"email": "cut@example.com"})
    assert listed.json()["data"] == []

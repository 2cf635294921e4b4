"""Every route of the app, walked from its own OpenAPI document and its routing table: what is
documented as secured refuses a missing key (401) and a key without the permission (403), what
needs no key is on a short, deliberate list, a method a path does not serve is a 405 naming
the ones it does, and every error answers in one shape (SPEC 2 and 6.1): `message`, a stable
`code` and the `request_id` of the response.

HTTP, the document and the routing tables (the public API's dispatcher and FastAPI's) are
used, so that these hold whatever serves the routes."""

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from contactbase.contacts.router import api
from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.spaces import service
from tests.factories import CONTACTS, SEED, add_contact, bearer, make_key, make_space

READ, WRITE, DELETE = "contacts:read", "contacts:write", "contacts:delete"
DOWNLOAD = f"{CONTACTS}/exports/{{export_id}}/download"
# What answers without a key (SPEC 3 "Operations", 6.9): the operators' endpoints, the document
# and its two viewers, whatever method they serve; and the export download, whose signed link
# is its own credential. /redoc is 6.9's, listed before it exists.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"})
PUBLIC_OPERATIONS = frozenset({("GET", DOWNLOAD)})
# Version 1 promises these (SPEC 3); each must be served, and without a key.
REQUIRED_PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")
# The secured operations of SPEC 3, by method and path with its parameters unnamed.
SPEC_OPERATIONS = frozenset(
    {
        ("POST", CONTACTS),
        ("GET", CONTACTS),
        ("GET", f"{CONTACTS}/{{}}"),
        ("PUT", f"{CONTACTS}/{{}}"),
        ("POST", f"{CONTACTS}/exports"),
        ("GET", f"{CONTACTS}/exports/{{}}"),
    }
)
# The methods a 405 probe sends. HEAD and OPTIONS are left out: the framework may serve them
# for any path, and whether it does is not the API's promise (an Allow that lists them is
# checked against what is served all the same).
PROBED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
PARAMETER = re.compile(r"\{([^}]+)\}")
UNKNOWN_KEY = "cb_" + "A" * 43  # well formed, never issued
CLIENT_REQUEST_ID = "client-chosen.id-42"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as documented, parameters named
    definition: dict[str, Any]
    secured: bool

    @property
    def shape(self) -> tuple[str, str]:
        """Method and path with the parameters' names left out, which the SPEC does not fix."""
        return self.method, PARAMETER.sub("{}", self.path)

    @property
    def url(self) -> str:
        return concrete(self.path)


def concrete(path: str) -> str:
    """The path with valid-looking values: an export's id is a UUID, every other id 1."""
    export_id = str(uuid.UUID(int=1))
    return PARAMETER.sub(lambda match: export_id if match[1] == "export_id" else "1", path)


def documented_operations(document: dict[str, Any]) -> list[Operation]:
    """Every operation of the document, secured when its effective `security` (its own, else
    the document's) names a scheme."""
    default_security = document.get("security", [])
    return [
        Operation(
            method.upper(), path, definition, bool(definition.get("security", default_security))
        )
        for path, item in document["paths"].items()
        for method, definition in item.items()
        if method.upper() in {*PROBED_METHODS, *IMPLICIT_METHODS, "TRACE"}
    ]


def required_permission(operation: Operation) -> str:
    """The permission SPEC 3 and 6.4 name: exports (both of their endpoints) and every GET
    read, an erasure delete, the other writes to contacts write."""
    if operation.path.startswith(f"{CONTACTS}/exports") or operation.method == "GET":
        return READ
    if operation.method in ("POST", "PUT"):
        return WRITE
    if operation.method == "DELETE":
        return DELETE
    raise AssertionError(f"SPEC names no permission for {operation.method} {operation.path}")


def example_body(operation: Operation, document: dict[str, Any]) -> Any:
    """The documented example of the operation's JSON body, so that a refusal cannot be about
    the body; `{}` when it has none; None when the operation takes no body."""
    request_body = operation.definition.get("requestBody")
    if request_body is None:
        return None
    media = request_body.get("content", {}).get("application/json", {})
    if "example" in media:
        return media["example"]
    if media.get("examples"):
        return next(iter(media["examples"].values())).get("value", {})
    schema = media.get("schema", {})
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    examples = schema.get("examples") or [{}]
    return examples[0]


def served_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Method and path of every route the app serves: the public API's operations, as the
    dispatcher holds them, and FastAPI's routing table, included routers' routes with their
    prefix (a mount, which has no methods, counts as one route of method "*")."""
    served = [(operation.method, operation.path) for operation in api.operations]
    for route in iter_route_contexts(app.routes):
        assert route.path is not None, route
        methods = route.methods or {"*"}
        served.extend((method, route.path) for method in sorted(methods))
    return served


def listing(title: str, items: list[Any]) -> str:
    """An assertion's message: every item, one a line (pytest would cut the list short)."""
    return "\n".join([f"{title}:", *(f"  {item}" for item in items)])


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> httpx.Response:
    return await client.request(
        method, url, headers=headers, **({} if body is None else {"json": body})
    )


async def test_every_secured_operation_refuses_a_missing_key_and_a_missing_permission(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    """401 without a key or with an unknown one, and 403 for a key that has every permission
    but the one the operation needs: on each operation the document secures, so that a new
    endpoint cannot be documented as secured and served open."""
    document = app.openapi()
    secured = [operation for operation in documented_operations(document) if operation.secured]
    assert {operation.shape for operation in secured} >= SPEC_OPERATIONS
    space_id = await make_space(db)
    keys = {
        READ: bearer(await make_key(db, space_id, [WRITE, DELETE])),  # lacks read
        WRITE: bearer(await make_key(db, space_id, [READ, DELETE])),  # lacks write
        DELETE: bearer(await make_key(db, space_id, [READ, WRITE])),  # lacks delete
    }
    wrong: list[tuple[str, str, str, int]] = []
    for operation in secured:
        body = example_body(operation, document)
        attempts = {
            "no key": ({}, 401),
            "an unknown key": (bearer(UNKNOWN_KEY), 401),
            "a key without the permission": (keys[required_permission(operation)], 403),
        }
        for attempt, (headers, expected) in attempts.items():
            response = await send(client, operation.method, operation.url, headers, body)
            if response.status_code != expected:
                wrong.append((operation.method, operation.url, attempt, response.status_code))
    assert wrong == [], listing("(method, path, attempt, status) of the wrong answers", wrong)


def test_only_the_listed_routes_need_no_key(app: FastAPI) -> None:
    """What the document leaves open, and every route the app serves that the document does not
    secure (the document's own routes and the docs are not in it), is on the public list."""
    operations = documented_operations(app.openapi())
    secured = {(operation.method, operation.path) for operation in operations if operation.secured}

    def is_listed(method: str, path: str) -> bool:
        return path in PUBLIC_PATHS or (method, path) in PUBLIC_OPERATIONS

    open_in_document = [
        (operation.method, operation.path)
        for operation in operations
        if not operation.secured and not is_listed(operation.method, operation.path)
    ]
    assert open_in_document == [], listing("documented open, not listed", open_in_document)
    open_in_app = [
        (method, path)
        for method, path in served_routes(app)
        if (method, path) not in secured and not is_listed(method, path)
    ]
    assert open_in_app == [], listing("served, not secured, not listed", open_in_app)


async def test_public_routes_answer_without_a_key(app: FastAPI, client: httpx.AsyncClient) -> None:
    """SPEC 3's operators' endpoints, the document and the docs are served, to anyone; the
    download's refusal of a missing signature is its own (a 403 or 422), never a 401."""
    served_paths = {path for _method, path in served_routes(app)}
    assert [path for path in REQUIRED_PUBLIC_PATHS if path not in served_paths] == []
    answers = {
        path: (await client.get(path)).status_code for path in sorted(PUBLIC_PATHS & served_paths)
    }
    assert answers == dict.fromkeys(answers, 200)
    download = await client.get(concrete(DOWNLOAD))
    assert download.status_code in (403, 422), download.text


async def test_a_method_not_served_is_a_405_that_lists_the_methods_served(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    """On every documented path (and the docs' own), each other method is a 405 whose `Allow`
    lists exactly the methods served there (SPEC 6.1): e.g. DELETE /contacts → `GET, POST`,
    PATCH /contacts/1 → `GET, PUT`, GET /contacts/exports → `POST` (not a contact id "exports").
    The key has every permission, so no refusal of the key comes first."""
    auth = bearer(await make_key(db, await make_space(db)))
    served: dict[str, set[str]] = {}
    for operation in documented_operations(app.openapi()):
        served.setdefault(operation.path, set()).add(operation.method)
    for _method, path in served_routes(app):
        if path in PUBLIC_PATHS and path not in served:
            served[path] = {"GET"}
    wrong: list[tuple[str, str, int, str | None]] = []
    for path, methods in sorted(served.items()):
        url = concrete(path)
        for method in PROBED_METHODS:
            if method in methods:
                continue
            response = await client.request(method, url, headers=auth)
            allow = response.headers.get("allow")
            listed = {item.strip().upper() for item in (allow or "").split(",") if item.strip()}
            # Beyond the documented methods, Allow may name only HEAD or OPTIONS, and only when
            # they are served.
            extra = listed - methods
            statuses = [(await client.request(m, url, headers=auth)).status_code for m in extra]
            extra_served = extra <= IMPLICIT_METHODS and 405 not in statuses
            if response.status_code != 405 or not methods <= listed or not extra_served:
                wrong.append((method, url, response.status_code, allow))
    assert wrong == [], listing("(method, path, status, Allow) of the wrong answers", wrong)


@dataclass(frozen=True)
class Situation:
    """A request that is refused, and the status and code of its refusal."""

    status: int
    code: str
    request: Callable[[httpx.AsyncClient, Database, Settings], Awaitable[httpx.Response]]
    fields: frozenset[str] = frozenset()  # what the body holds besides message, code, request_id


async def deactivated_space(db: Database, space_id: int) -> None:
    async with db.writer() as session, session.begin():
        await service.set_status(session, space_id, "inactive")


async def _unauthenticated(client: httpx.AsyncClient, db: Database, _s: Settings) -> httpx.Response:
    return await client.get(f"{CONTACTS}/1")


async def _unknown_key(client: httpx.AsyncClient, db: Database, _s: Settings) -> httpx.Response:
    return await client.get(f"{CONTACTS}/1", headers=bearer(UNKNOWN_KEY))


async def _space_inactive(client: httpx.AsyncClient, db: Database, _s: Settings) -> httpx.Response:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    await deactivated_space(db, space_id)
    return await client.get(f"{CONTACTS}/1", headers=auth)


async def _permission(client: httpx.AsyncClient, db: Database, _s: Settings) -> httpx.Response:
    read_only = bearer(await make_key(db, await make_space(db), [READ]))
    return await client.post(CONTACTS, json=SEED, headers=read_only)


async def _unknown_id(client: httpx.AsyncClient, db: Database, _s: Settings) -> httpx.Response:
    auth = bearer(await make_key(db, await make_space(db)))
    return await client.get(f"{CONTACTS}/999999", headers=auth)


async def _unknown_path(client: httpx.AsyncClient, db: Database, _s: Settings) -> httpx.Response:
    auth = bearer(await make_key(db, await make_space(db)))
    return await client.get("/public-api/v1/nothing-here", headers=auth)


async def _method(client: httpx.AsyncClient, db: Database, _s: Settings) -> httpx.Response:
    auth = bearer(await make_key(db, await make_space(db)))
    return await client.delete(CONTACTS, headers=auth)


async def _too_large(client: httpx.AsyncClient, db: Database, settings: Settings) -> httpx.Response:
    auth = bearer(await make_key(db, await make_space(db)))
    padding = b" " * settings.max_body_bytes
    return await client.post(
        CONTACTS, content=b'{"emails": ["a@example.com"]}' + padding, headers=auth
    )


async def _invalid(client: httpx.AsyncClient, db: Database, _s: Settings) -> httpx.Response:
    auth = bearer(await make_key(db, await make_space(db)))
    return await client.post(CONTACTS, json={"emails": ["not-an-email"]}, headers=auth)


async def _taken_email(client: httpx.AsyncClient, db: Database, _s: Settings) -> httpx.Response:
    """SPEC 6.1: a PUT naming another contact's email is `validation_failed` too."""
    auth = bearer(await make_key(db, await make_space(db)))
    await add_contact(client, auth, {"emails": ["first@example.com"]})
    second = await add_contact(client, auth, {"emails": ["second@example.com"]})
    change = {"emails": ["first@example.com"]}
    return await client.put(f"{CONTACTS}/{second['id']}", json=change, headers=auth)


SITUATIONS = {
    "no key": Situation(401, "unauthenticated", _unauthenticated),
    "unknown key": Situation(401, "unauthenticated", _unknown_key),
    "inactive Space": Situation(403, "space_inactive", _space_inactive),
    "permission missing": Situation(403, "permission_missing", _permission),
    "unknown id": Situation(404, "not_found", _unknown_id),
    "unknown path": Situation(404, "not_found", _unknown_path),
    "method not allowed": Situation(405, "method_not_allowed", _method),
    "body too large": Situation(413, "payload_too_large", _too_large),
    "invalid body": Situation(422, "validation_failed", _invalid, frozenset({"errors"})),
    "email of another contact": Situation(
        422, "validation_failed", _taken_email, frozenset({"errors", "existing_contact_id"})
    ),
}


@pytest.mark.parametrize(
    "sent_request_id", [None, CLIENT_REQUEST_ID], ids=["our id", "client's id"]
)
@pytest.mark.parametrize("situation", list(SITUATIONS))
async def test_every_error_names_its_code_and_request_id(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    situation: str,
    sent_request_id: str | None,
) -> None:
    """JSON with a `message`, the situation's `code` (SPEC 6.1) and the `request_id` that the
    response's X-Request-Id carries, the client's own when it sent one: so that a client can
    branch on the code and quote the id, whatever part of the service refused."""
    expected = SITUATIONS[situation]
    if sent_request_id is not None:
        client.headers["X-Request-Id"] = sent_request_id
    response = await expected.request(client, db, settings)
    assert response.status_code == expected.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("message"), str)
    assert body["message"]
    assert expected.fields <= set(body), body
    request_id = response.headers.get("x-request-id")
    assert request_id is not None
    if sent_request_id is not None:
        assert request_id == sent_request_id
    assert {"code": body.get("code"), "request_id": body.get("request_id")} == {
        "code": expected.code,
        "request_id": request_id,
    }

"""Operator endpoints and the outer layer of every request: request ids, routing errors,
500 without a stack trace, 503 while the database is away, metrics and the OpenAPI document."""

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from contactbase.app import close, create_app
from contactbase.db import Database
from contactbase.migrations import schema_head
from contactbase.settings import Settings
from tests.factories import CONTACTS, SEED, answered, make_tenant

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nope"
SOME_KEY = {"Authorization": "Bearer cb_" + "A" * 43}
FRESH_ID = re.compile(r"[0-9a-f]{32}")


async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await close(app)


@pytest.fixture
async def offline() -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose database cannot be reached."""
    async for http in serve(create_app(Settings(database_url=UNREACHABLE, redis_url=None))):
        yield http


@pytest.fixture
async def boom(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with a route that fails unexpectedly."""
    app = create_app(settings)

    @app.get("/boom")
    async def explode() -> None:
        raise RuntimeError("secret internal detail")

    @app.get("/deadlock")
    async def deadlock() -> None:
        # What asyncpg's deadlock reaches the app as, once SQLAlchemy has wrapped it.
        class Deadlock(Exception):
            sqlstate = "40P01"

        raise DBAPIError("UPDATE contacts …", None, Deadlock("deadlock detected"))

    async for http in serve(app):
        yield http


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert answered(response) == {"status": "ok"}


async def test_readyz_reports_the_schema(client: httpx.AsyncClient) -> None:
    head = schema_head()
    assert head is not None
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert answered(response) == {"status": "ok", "schema": head}


async def test_readyz_is_503_without_a_database(offline: httpx.AsyncClient) -> None:
    response = await offline.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "unreachable" in response.json()["message"]


async def test_healthz_answers_without_a_database(offline: httpx.AsyncClient) -> None:
    assert (await offline.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", CONTACTS), ("GET", CONTACTS), ("GET", f"{CONTACTS}/1")],
)
async def test_contacts_without_a_database_are_503(
    offline: httpx.AsyncClient, method: str, path: str
) -> None:
    body = SEED if method == "POST" else None
    response = await offline.request(method, path, json=body, headers=SOME_KEY)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert list(answered(response)) == ["message"]
    assert "unavailable" in response.json()["message"]
    assert FRESH_ID.fullmatch(response.headers["x-request-id"])
    metrics = (await offline.get("/metrics")).text
    assert "contactbase_database_unavailable_total 1.0" in metrics


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    await client.get("/healthz")
    await client.get(CONTACTS)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE contactbase_requests_total counter" in text
    assert 'contactbase_requests_total{method="GET",route="/healthz",status="200"} 2.0' in text
    assert (
        'contactbase_requests_total{method="GET",route="/public-api/v1/contacts",status="401"} 1.0'
        in text
    )
    assert "contactbase_request_seconds_bucket" in text


async def test_openapi_documents_the_contacts_endpoints(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    operations = {
        "create": paths[CONTACTS]["post"],
        "list": paths[CONTACTS]["get"],
        "get": paths[f"{CONTACTS}/{{contact_id}}"]["get"],
    }
    for name, operation in operations.items():
        assert {"401", "403", "422", "429"} <= set(operation["responses"]), name
        assert operation["summary"], name
    create = operations["create"]
    assert {"200", "201", "409", "413"} <= set(create["responses"])
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert create["requestBody"]["required"] is True
    assert schema == {"$ref": "#/components/schemas/ContactCreate"}
    schema = document["components"]["schemas"]["ContactCreate"]
    assert {"emails", "phones", "names", "locations"} <= set(schema["properties"])
    assert schema["required"] == ["emails"]
    parameters = [parameter["name"] for parameter in operations["get"]["parameters"]]
    assert "contact_id" in parameters
    assert "ApiKey" in document["components"]["securitySchemes"]


async def test_docs_are_html(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


async def test_every_response_has_a_fresh_request_id(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    responses = [
        await client.get("/healthz"),
        await client.get("/nowhere"),
        await client.get(CONTACTS),
        await client.post(CONTACTS, json=SEED, headers=auth),
        await client.post(CONTACTS, json={"emails": ["bad"]}, headers=auth),
        await client.post(CONTACTS, content=b"x" * (1024 * 1024 + 1), headers=auth),
    ]
    assert [r.status_code for r in responses] == [200, 404, 401, 201, 422, 413]
    ids = [r.headers["x-request-id"] for r in responses]
    for request_id in ids:
        assert FRESH_ID.fullmatch(request_id)
    assert len(set(ids)) == len(ids)


async def test_the_clients_request_id_is_echoed(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    for method, path, headers in (
        ("GET", "/healthz", {}),
        ("GET", CONTACTS, {}),
        ("GET", CONTACTS, auth),
        ("DELETE", CONTACTS, auth),
    ):
        response = await client.request(
            method, path, headers={**headers, "X-Request-Id": "trace-abc.123"}
        )
        assert response.headers["x-request-id"] == "trace-abc.123"


async def test_a_malformed_client_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    for sent in ("has space", "x" * 129):
        response = await client.get("/healthz", headers={"X-Request-Id": sent})
        assert FRESH_ID.fullmatch(response.headers["x-request-id"])


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    for path in ("/nowhere", "/public-api/v1/contact", "/public-api/v2/contacts"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert answered(response) == {"message": "Not found."}


async def test_wrong_method_is_json_405(client: httpx.AsyncClient) -> None:
    for method, path in (("DELETE", CONTACTS), ("PATCH", f"{CONTACTS}/1"), ("POST", "/healthz")):
        response = await client.request(method, path)
        assert response.status_code == 405
        assert response.headers["content-type"] == "application/json"
        assert answered(response) == {"message": "Method not allowed."}


async def test_an_unretried_deadlock_is_503_not_500(boom: httpx.AsyncClient) -> None:
    response = await boom.get("/deadlock")
    assert response.status_code == 503
    assert answered(response) == {"message": "The database is busy; retry the request."}


async def test_unexpected_failure_is_500_with_the_request_id(boom: httpx.AsyncClient) -> None:
    response = await boom.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"message", "code", "request_id"}
    assert body["code"] == "internal_error"
    assert body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert FRESH_ID.fullmatch(body["request_id"])
    for leak in ("Traceback", "RuntimeError", "secret internal detail", "explode", ".py"):
        assert leak not in response.text
    echoed = await boom.get("/boom", headers={"X-Request-Id": "incident-42"})
    assert echoed.json()["request_id"] == "incident-42"
    assert echoed.headers["x-request-id"] == "incident-42"
    assert (await boom.get("/healthz")).status_code == 200

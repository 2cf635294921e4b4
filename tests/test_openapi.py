"""The OpenAPI document as client generators read it (SPEC 6.9): valid, an operationId per
operation, named component schemas, timestamps as date-times, the headers every answer carries,
`servers`, and `security: []` where no key is needed. `make openapi-check` goes further: Redocly's
lint, and a generated client driven through every operation against a real server."""

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from contactbase.contacts.custom_fields import SLOTS

API = "/public-api/v1"
DOWNLOAD = f"{API}/contacts/exports/{{export_id}}/download"
# SPEC 6.9's names, and the operators' endpoints'.
OPERATION_IDS = {
    "createContact",
    "getContact",
    "listContacts",
    "updateContact",
    "deleteContact",
    "batchUpsertContacts",
    "listContactChanges",
    "createExport",
    "getExport",
    "downloadExport",
    "healthz",
    "readyz",
    "metrics",
}
# No key: the operators' endpoints, and the download, whose signed link is its credential.
OPEN = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", DOWNLOAD)}
# Refused before the limit step (SPEC 2): not counted, no rate-limit headers.
BEFORE_LIMIT = {"401", "403", "413", "431"}
TIMESTAMPS = {"created_at", "updated_at", "occurred_at", "completed_at", "expires_at"}


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    served: dict[str, Any] = response.json()
    return served


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """The object a `$ref` names, or the node itself."""
    if "$ref" not in node:
        return node
    found: dict[str, Any] = document
    for part in node["$ref"].removeprefix("#/").split("/"):
        found = found[part]
    return found


def headers_of(document: dict[str, Any], response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: resolve(document, header) for name, header in response["headers"].items()}


def test_the_served_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def test_every_operation_has_its_operation_id(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _method, _path, operation in operations(document)]
    assert sorted(ids) == sorted(OPERATION_IDS)
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", name) for name in ids), ids


def test_component_names_are_plain(document: dict[str, Any]) -> None:
    """Named as the models are (ContactCreate), never as FastAPI makes names up for inline
    bodies and answers (`Body_create_contact_public_api_v1_contacts_post`, `Response Healthz
    Healthz Get`), which generators turn into `CreateContactPublicApiV1ContactsPost…`."""
    names = list(document["components"]["schemas"])
    assert {"ContactCreate", "ContactDetail", "CustomFields", "CustomFieldValues"} <= set(names)
    assert [name for name in names if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", name)] == []
    text = str(document)
    for made_up in ("PublicApiV1", "public_api_v1", "Body_", "Response "):
        assert made_up not in text


def test_every_request_body_and_json_answer_names_a_component(document: dict[str, Any]) -> None:
    inline = []
    for method, path, operation in operations(document):
        bodies = [operation.get("requestBody", {}).get("content", {})]
        bodies += [response.get("content", {}) for response in operation["responses"].values()]
        for content in bodies:
            schema = content.get("application/json", {}).get("schema")
            if schema is None or path in ("/healthz", "/readyz"):
                continue
            refs = [schema, *schema.get("anyOf", [])]
            if not any("$ref" in one for one in refs):
                inline.append((method, path, schema))
    assert inline == []


def test_every_timestamp_is_a_date_time(document: dict[str, Any]) -> None:
    seen = set()
    for schema in document["components"]["schemas"].values():
        for name, prop in schema.get("properties", {}).items():
            if not name.endswith("_at"):
                continue
            seen.add(name)
            typed = [one for one in prop.get("anyOf", [prop]) if one.get("type") != "null"]
            assert [(one["type"], one.get("format")) for one in typed] == [
                ("string", "date-time")
            ], (name, prop)
    assert seen == TIMESTAMPS


def test_every_answer_declares_x_request_id(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            headers = headers_of(document, response)
            assert headers["X-Request-Id"]["required"] is True, (method, path, status)
        names = [parameter["name"] for parameter in operation["parameters"]]
        assert "X-Request-Id" in names, (method, path)


def test_answers_from_the_limit_step_on_declare_the_rate_limit(document: dict[str, Any]) -> None:
    """Every answer of a keyed operation from the limit step on declares X-RateLimit-Limit and
    -Remaining (not required: the limiter fails open) and the IETF fields; a 429 requires
    Retry-After; the refusals before the limit step declare none."""
    limited = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "RateLimit-Policy", "RateLimit")
    for method, path, operation in operations(document):
        if not operation["security"]:
            continue
        assert "429" in operation["responses"], (method, path)
        for status, response in operation["responses"].items():
            headers = headers_of(document, response)
            where = (method, path, status)
            if status in BEFORE_LIMIT:
                assert not set(limited) & set(headers), where
                continue
            assert set(limited) <= set(headers), where
            assert headers["X-RateLimit-Limit"]["schema"] == {"type": "integer", "minimum": 0}
            if status == "429":
                assert headers["Retry-After"]["required"] is True, where
                assert headers["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}


def test_idempotent_operations_take_an_idempotency_key(document: dict[str, Any]) -> None:
    idempotent = {
        operation["operationId"]
        for _method, _path, operation in operations(document)
        if "Idempotency-Key" in [parameter["name"] for parameter in operation["parameters"]]
    }
    assert idempotent == {"createContact", "batchUpsertContacts", "createExport"}


def test_only_the_open_routes_need_no_key(document: dict[str, Any]) -> None:
    assert document["security"] == [{"ApiKey": []}]
    for method, path, operation in operations(document):
        expected: list[dict[str, list[str]]] = [] if (method, path) in OPEN else [{"ApiKey": []}]
        assert operation["security"] == expected, (method, path)


def test_the_download_is_binary_as_generators_read_it(document: dict[str, Any]) -> None:
    """application/gzip as sent, and application/octet-stream, which generators hand over as
    bytes (an unknown type they leave out, and the 200 then raises UnexpectedStatus)."""
    content = document["paths"][DOWNLOAD]["get"]["responses"]["200"]["content"]
    binary = {"type": "string", "format": "binary"}
    assert content == {
        "application/gzip": {"schema": binary},
        "application/octet-stream": {"schema": binary},
    }


def test_custom_fields_are_typed_alike_in_requests_and_answers(document: dict[str, Any]) -> None:
    """One type per slot, both ways: in requests a slot is left out, never null (SPEC 2); in
    answers it is null when not set."""
    schemas = document["components"]["schemas"]
    sent, shown = schemas["CustomFields"], schemas["CustomFieldValues"]
    assert list(sent["properties"]) == list(SLOTS) == list(shown["properties"])
    types = {"string": 0, "number": 0}
    for slot in SLOTS:
        request = {k: v for k, v in sent["properties"][slot].items() if k != "title"}
        answer = shown["properties"][slot]
        assert "default" not in request, slot
        assert answer["anyOf"] == [request, {"type": "null"}], slot
        types[request["type"]] += 1
    assert types == {"string": 20, "number": 10}
    for model, field in (
        ("ContactCreate", "custom_fields"),
        ("ContactUpdate", "custom_fields"),
    ):
        assert schemas[model]["properties"][field]["$ref"].endswith("/CustomFields")
    for model in ("ContactDetail", "ContactSummary", "ContactUpdated"):
        prop = schemas[model]["properties"]["custom_fields"]
        assert prop["anyOf"][0] == {"$ref": "#/components/schemas/CustomFieldValues"}, model


def test_an_update_refusal_declares_the_owner_of_an_email(document: dict[str, Any]) -> None:
    responses = document["paths"][f"{API}/contacts/{{contact_id}}"]["put"]["responses"]
    body = resolve(document, responses["422"]["content"]["application/json"]["schema"])
    assert "existing_contact_id" in body["properties"]


def test_the_server_is_the_document_s_own_host(document: dict[str, Any]) -> None:
    """Without CONTACTBASE_PUBLIC_URL (tests/test_public_url.py has it), relative."""
    assert document["servers"] == [{"url": "/"}]


async def test_under_a_root_path_the_server_is_the_prefix(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, root_path="/crm")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        served = (await client.get("/crm/openapi.json")).json()
    assert served["servers"][0] == {"url": "/crm"}

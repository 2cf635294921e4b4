"""The OpenAPI document: FastAPI's for the operations endpoints, and the public API's built from
its declarations (dispatch.Api), with error responses derived from the error types.

It is written for client generators (SPEC 6.9): an operationId per operation, named component
schemas, the headers every answer carries, `servers`, and `security: []` where no key is needed.
`make openapi-check` lints it and drives a generated client through every operation."""

import re
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from contactbase import errors
from contactbase.contacts.batch_schemas import BatchResult
from contactbase.contacts.exports import TooManyExports
from contactbase.dispatch import Api, Operation
from contactbase.errors import ApiError


class ErrorBody(BaseModel):
    message: str = Field(examples=["Unauthenticated."])
    code: str = Field(description="What happened, as one stable snake_case word (SPEC 6.1).")
    request_id: str = Field(description="The response's X-Request-Id; quote it when reporting.")


class ValidationErrorBody(ErrorBody):
    message: str = Field(
        examples=['The emails.1 field must be a valid email address ("not-an-email").']
    )
    errors: dict[str, list[str]] = Field(
        description="Messages by field path (emails, emails.1, phones.0, …).",
        examples=[
            {"emails.1": ['The emails.1 field must be a valid email address ("not-an-email").']}
        ],
    )
    existing_contact_id: int | None = Field(
        default=None, description="On an update: the contact that owns a sent email."
    )


class ConflictBody(ErrorBody):
    existing_contact_id: int = Field(description="The lowest id among the contacts matched.")


class BatchRefusedBody(ValidationErrorBody, BatchResult):
    """atomic=true and an item failed: nothing was stored. The error body with every item's
    result; `errors` holds the failed items' reasons under `contacts.N.`."""


class ChangesExpiredBody(ErrorBody):
    oldest_after: int = Field(description="The smallest `after` still served.")


ERROR_BODIES: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (
        ErrorBody,
        ValidationErrorBody,
        ConflictBody,
        BatchRefusedBody,
        ChangesExpiredBody,
    )
}
# Every operation may answer these; a secured one these too; one that reads a body these.
EVERY = (
    errors.InvalidInput,
    errors.HeadersTooLarge,
    errors.InternalError,
    errors.ServiceUnavailable,
    errors.Overloaded,
)
SECURED = (
    errors.Unauthenticated,
    errors.SpaceInactive,
    errors.PermissionMissing,
    errors.TooManyRequests,
)
WITH_BODY = (errors.PayloadTooLarge,)
IDEMPOTENT = (errors.IdempotencyMismatch, errors.IdempotencyInFlight)
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes a retry safe (SPEC 6.2): a request repeated with the same key gets the "
    "first one's answer again and changes nothing, for 24 hours; the same key with another "
    "request is a 422, and while the first is being answered a 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}
REQUEST_ID = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "description": "An id of the client's for the request (1 to 128 printable ASCII characters), "
    "answered in X-Request-Id and logged; any other value is replaced by a new id.",
    "schema": {"type": "string"},
}
# The response headers, as components: `headers` of each response refers to them.
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {
        "description": "The request's id: the client's, when it sent a valid one, else a new one. "
        "Error bodies repeat it as `request_id`; quote it when reporting.",
        "required": True,
        "schema": {"type": "string"},
    },
    "X-RateLimit-Limit": {
        "description": "Requests per minute the Space may make to this endpoint (SPEC 2). Sent "
        "on every answer from the limit step on, unless the limiter is unavailable (it fails "
        "open).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-RateLimit-Remaining": {
        "description": "The limit less the requests counted in the current window.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Policy": {
        "description": 'The IETF draft\'s policy field: `"endpoint";q=limit;w=window seconds`.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'The IETF draft\'s field: `"endpoint";r=remaining;t=seconds to reset`.',
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Whole seconds to wait before trying again (at least 1).",
        "schema": {"type": "integer", "minimum": 1},
    },
    "Idempotent-Replayed": {
        "description": "`true` on an answer replayed for a repeated Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "RateLimit-Policy", "RateLimit")
# Refused before the limit step (SPEC 2): these answers are not counted and carry no limit.
BEFORE_LIMIT = {
    str(kind.status)
    for kind in (
        errors.HeadersTooLarge,
        errors.PayloadTooLarge,
        errors.Unauthenticated,
        errors.SpaceInactive,
        errors.PermissionMissing,
    )
}
# The errors whose answers say when to retry.
SENDS_RETRY_AFTER = (
    errors.TooManyRequests,
    TooManyExports,
    errors.Overloaded,
    errors.IdempotencyInFlight,
)
# Binary bodies: application/octet-stream beside the type sent, so that client generators,
# which know that one, hand the bytes over (SPEC 6.9).
OCTETS = "application/octet-stream"

SECURITY_SCHEME = {
    "ApiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A key made by `contactbase key create`: `Authorization: Bearer cb_…`.",
    }
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(name: str, *, required: bool | None = None) -> dict[str, Any]:
    reference = {"$ref": f"#/components/headers/{name}"}
    if required is None or required == HEADERS[name].get("required", False):
        return reference
    return {**HEADERS[name], "required": required}


def error_responses(kinds: tuple[type[ApiError], ...]) -> dict[str, Any]:
    """The responses of these errors, one per status, each naming its codes (and Retry-After,
    required when every error of the status sends it)."""
    by_status: dict[int, list[type[ApiError]]] = {}
    for kind in kinds:
        by_status.setdefault(kind.status, []).append(kind)
    responses: dict[str, Any] = {}
    for status, found in sorted(by_status.items()):
        response: dict[str, Any] = {
            "description": "; ".join(f"`{kind.code}`: {kind.summary}" for kind in found),
            "content": {"application/json": {"schema": _schema(found)}},
        }
        retrying = [issubclass(kind, SENDS_RETRY_AFTER) for kind in found]
        if any(retrying):
            response["headers"] = {"Retry-After": _header("Retry-After", required=all(retrying))}
        responses[str(status)] = response
    return responses


def _schema(kinds: list[type[ApiError]]) -> dict[str, Any]:
    """The body schema of errors of one status: the one body they share, or any of theirs."""
    bodies = list(dict.fromkeys(kind.body for kind in kinds))
    if len(bodies) == 1:
        return _ref(bodies[0])
    return {"anyOf": [_ref(body) for body in bodies]}


def _parameters(operation: Operation, definitions: dict[str, Any]) -> list[dict[str, Any]]:
    """The operation's path and query parameters; the schemas the query's name are added to
    `definitions`. A query parameter that holds objects (custom_field_filters) is described
    as JSON in the query string, OpenAPI's `content` form."""
    parameters = [
        {"name": name, "in": "path", "required": True, **spec}
        for name, spec in operation.parameters.items()
    ]
    if operation.idempotent:
        parameters.append(IDEMPOTENCY_KEY)
    parameters.append(REQUEST_ID)
    schema = operation.query.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions.update(schema.get("$defs", {}))
    for name, field in schema.get("properties", {}).items():
        described = {"description": field["description"]} if "description" in field else {}
        listed = next((one for one in field.get("anyOf", [field]) if "items" in one), None)
        if listed is not None and "$ref" in listed["items"]:
            described = {"description": listed.get("description", "")}
            form = {"content": {"application/json": {"schema": listed}}}
        else:
            form = {"schema": field}
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in schema.get("required", ()),
                **form,
                **described,
            }
        )
    return parameters


def public_api(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paths of the declared operations, and the component schemas they name."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "serialization") for model in ERROR_BODIES.values()
    ]
    for operation in api.operations:
        if operation.body is not None:
            wanted.append((operation.body, "validation"))
        if operation.response is not None:
            wanted.append((operation.response, "serialization"))
        for extra in operation.answers.values():
            if "model" in extra:
                wanted.append((extra["model"], "serialization"))
    refs, definitions = models_json_schema(
        list(dict.fromkeys(wanted)), ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = definitions.get("$defs", {})
    for operation in api.operations:
        kinds = EVERY + operation.errors
        if operation.access is not None:
            kinds += SECURED
        if operation.body is not None:
            kinds += WITH_BODY
        if operation.idempotent:
            kinds += IDEMPOTENT
        responses: dict[str, Any] = {}
        if operation.response is not None:
            schema = refs[(operation.response, "serialization")]
            responses[str(operation.status)] = {
                "description": "Success",
                "content": {"application/json": {"schema": schema}},
            }
        for status, extra in operation.answers.items():
            if "model" in extra:
                schema = refs[(extra["model"], "serialization")]
                extra = {
                    "description": extra["description"],
                    "content": {"application/json": {"schema": schema}},
                }
            responses[status] = _with_octets(extra)
        responses.update(error_responses(kinds))
        for status, response in responses.items():
            headers = {"X-Request-Id": _header("X-Request-Id")}
            if operation.access is not None and status not in BEFORE_LIMIT:
                headers.update((name, _header(name)) for name in RATE_LIMIT_HEADERS)
            headers.update(response.get("headers", {}))
            if operation.idempotent and (status.startswith("2") or status == "409"):
                headers["Idempotent-Replayed"] = _header("Idempotent-Replayed")
            response["headers"] = headers
        document: dict[str, Any] = {
            "tags": ["contacts"],
            "summary": operation.summary,
            "description": (operation.handler.__doc__ or "").strip(),
            "operationId": operation.operation_id,
            "parameters": _parameters(operation, schemas),
            "responses": responses,
            "security": [{name: []} for name in SECURITY_SCHEME] if operation.access else [],
        }
        if operation.body is not None:
            document["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(operation.body, "validation")]}},
            }
        paths.setdefault(operation.path, {})[operation.method.lower()] = document
    return paths, schemas


def _with_octets(response: dict[str, Any]) -> dict[str, Any]:
    """A copy of a declared response; a binary body is also listed as application/octet-stream."""
    content = response.get("content", {})
    binary = [
        media for media in content.values() if media.get("schema", {}).get("format") == "binary"
    ]
    if not binary or OCTETS in content:
        return dict(response)
    return {**response, "content": {**content, OCTETS: binary[0]}}


def operations_endpoints(paths: dict[str, Any]) -> None:
    """FastAPI's operations endpoints as generators want them: an operationId from the route's
    name where FastAPI made one up (`healthz_healthz_get`), no title made up for an inline
    schema (`Response Healthz Healthz Get`), no key unless the route asks for one, and the
    answers every request may get."""
    for path, item in paths.items():
        for method, operation in item.items():
            # FastAPI's own: the route's name, then the path and the method, as one word.
            suffix = re.sub(r"\W", "_", path) + "_" + method
            made_up = operation.get("operationId", "")
            if made_up.endswith(suffix) and len(made_up) > len(suffix):
                first, *rest = made_up[: -len(suffix)].split("_")
                operation["operationId"] = first + "".join(part.title() for part in rest)
            responses = operation.setdefault("responses", {})
            for status, response in error_responses(
                (errors.HeadersTooLarge, errors.InternalError)
            ).items():
                responses.setdefault(status, response)
            for response in responses.values():
                for media in response.get("content", {}).values():
                    title = media.get("schema", {}).get("title", "")
                    if title.startswith("Response "):
                        del media["schema"]["title"]
                response["headers"] = {
                    "X-Request-Id": _header("X-Request-Id"),
                    **response.get("headers", {}),
                }
            operation["parameters"] = [*operation.get("parameters", []), REQUEST_ID]
            operation.setdefault("security", [])  # unless the route declares a key


def complete_document(document: dict[str, Any], api: Api) -> dict[str, Any]:
    """FastAPI's document of the operations endpoints, with the public API's paths, their
    component schemas, the headers and the key's scheme added; a key is needed unless an
    operation says otherwise. Without CONTACTBASE_PUBLIC_URL (or a proxy's root path, which
    FastAPI puts first) the server is the document's own host."""
    operations_endpoints(document.get("paths", {}))
    paths, schemas = public_api(api)
    document["paths"] = {**paths, **document.get("paths", {})}
    document["servers"] = document.get("servers") or [{"url": "/"}]
    document["security"] = [{name: []} for name in SECURITY_SCHEME]
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(schemas)
    components["headers"] = HEADERS
    components["securitySchemes"] = SECURITY_SCHEME
    return document

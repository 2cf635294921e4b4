"""The OpenAPI document: FastAPI's for the operations endpoints, and the public API's built from
its declarations (dispatch.Api), with error responses derived from the error types."""

from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from contactbase import errors
from contactbase.contacts.batch_schemas import BatchResult
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
REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` on an answer replayed for a repeated Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}

SECURITY_SCHEME = {
    "ApiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A key made by `contactbase key create`: `Authorization: Bearer cb_…`.",
    }
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def error_responses(kinds: tuple[type[ApiError], ...]) -> dict[str, Any]:
    """The responses of these errors, one per status, each naming its codes."""
    by_status: dict[int, list[type[ApiError]]] = {}
    for kind in kinds:
        by_status.setdefault(kind.status, []).append(kind)
    return {
        str(status): {
            "description": "; ".join(f"`{kind.code}`: {kind.summary}" for kind in found),
            "content": {"application/json": {"schema": _schema(found)}},
        }
        for status, found in sorted(by_status.items())
    }


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
            responses[status] = extra
        responses.update(error_responses(kinds))
        if operation.idempotent:
            for status, response in responses.items():
                if status.startswith("2") or status == "409":
                    response["headers"] = REPLAYED_HEADER
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


def complete_document(document: dict[str, Any], api: Api) -> dict[str, Any]:
    """FastAPI's document of the operations endpoints, with the public API's paths, their
    component schemas and the key's scheme added."""
    paths, schemas = public_api(api)
    document["paths"] = {**paths, **document.get("paths", {})}
    components = document.setdefault("components", {})
    components.setdefault("schemas", {}).update(schemas)
    components["securitySchemes"] = SECURITY_SCHEME
    return document

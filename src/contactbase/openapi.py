"""What the OpenAPI document says of request bodies and error responses."""

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    message: str = Field(examples=["Unauthenticated."])


class ValidationErrorBody(BaseModel):
    message: str = Field(
        examples=['The emails.1 field must be a valid email address ("not-an-email").']
    )
    errors: dict[str, list[str]] = Field(
        description="Messages by field path (emails, emails.1, phones.0, …).",
        examples=[
            {"emails.1": ['The emails.1 field must be a valid email address ("not-an-email").']}
        ],
    )


class ConflictBody(BaseModel):
    message: str
    existing_contact_id: int = Field(description="The lowest id among the contacts matched.")


class ServerErrorBody(BaseModel):
    message: str
    request_id: str = Field(description="Quote it when reporting the problem; it is in the logs.")


ERRORS: dict[int, tuple[type[BaseModel], str]] = {
    401: (ErrorBody, "No key, or an unknown or revoked key"),
    403: (ErrorBody, "The Space is inactive, or the key lacks the permission"),
    404: (ErrorBody, "No such contact in the key's Space"),
    409: (ConflictBody, "The emails are known and on_conflict=error was asked"),
    413: (ErrorBody, "The body is larger than CONTACTBASE_MAX_BODY_BYTES"),
    422: (ValidationErrorBody, "Invalid parameters or body"),
    429: (ErrorBody, "Over the Space's per-minute limit for this endpoint"),
    500: (ServerErrorBody, "Unexpected failure"),
    503: (ErrorBody, "The database is unavailable"),
}


def error_responses(*codes: int) -> dict[int | str, Any]:
    """The `responses` of a route: the listed errors, and 500."""
    return {
        code: {"model": ERRORS[code][0], "description": ERRORS[code][1]} for code in (*codes, 500)
    }


SECURITY_SCHEME = {
    "ApiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A key made by `contactbase key create`: `Authorization: Bearer cb_…`.",
    }
}


def documented(
    *, query: type[BaseModel], body: type[BaseModel] | None = None, secured: bool = True
) -> dict[str, Any]:
    """An `openapi_extra` for a route that reads its query and body itself (after the key and
    limit checks, so that a bad key is a 401 before a bad parameter or body is a 422)."""
    schema = query.model_json_schema()
    parameters = [
        {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", ()),
            "schema": field,
            **({"description": field["description"]} if "description" in field else {}),
        }
        for name, field in schema.get("properties", {}).items()
    ]
    extra: dict[str, Any] = {"parameters": parameters} if parameters else {}
    if body is not None:
        body_schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body_schema}},
        }
    if secured:
        extra["security"] = [{name: []} for name in SECURITY_SCHEME]
    return extra


def complete_document(document: dict[str, Any]) -> dict[str, Any]:
    """Move the nested models of documented bodies (pydantic's `$defs`) into
    components.schemas, where their references point, and declare the key scheme.
    Idempotent."""
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEME
    components = document["components"].setdefault("schemas", {})
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                components.update(media.get("schema", {}).pop("$defs", {}))
    return document

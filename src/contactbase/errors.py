"""Every error the API answers: one type that carries status, code, message, extra fields and
headers, the refusals of the domain as its subclasses, and `render`, the one place an error
becomes a body. Services raise these and never import FastAPI; the HTTP layer renders them."""

from typing import Any, ClassVar

import orjson


class ApiError(Exception):
    """An answer that is not a success: `status`, a stable snake_case `code` (SPEC 6.1), a
    human-readable `message`, fields the body adds (`errors`, `existing_contact_id`, ...) and
    headers (`Allow`, `Retry-After`, ...)."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    # What the OpenAPI document says of this error; `body` names its component schema.
    summary: ClassVar[str] = ""
    body: ClassVar[str] = "ErrorBody"

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers = headers or {}

    def content(self) -> dict[str, Any]:
        """The body less the request id: what the CLI prints with --json."""
        return {"message": self.message, **self.extra, "code": self.code}


class Unauthenticated(ApiError):
    status, code, summary = 401, "unauthenticated", "No key, or an unknown or revoked key"

    def __init__(self) -> None:
        super().__init__("Unauthenticated.")


class SpaceInactive(ApiError):
    status, code, summary = 403, "space_inactive", "The Space's subscription is inactive"

    def __init__(self) -> None:
        super().__init__("This Space's subscription is inactive.")


class PermissionMissing(ApiError):
    status, code, summary = 403, "permission_missing", "The key lacks the permission"

    def __init__(self, permission: str) -> None:
        super().__init__(f"This API key lacks the {permission} permission.")


class DownloadLinkInvalid(ApiError):
    status, code, summary = 403, "download_link_invalid", "The link is invalid or has expired"

    def __init__(self) -> None:
        super().__init__("This download link is invalid or has expired.")


class NotFound(ApiError):
    status, code, summary = 404, "not_found", "No such resource in the key's Space"


class MethodNotAllowed(ApiError):
    status, code, summary = 405, "method_not_allowed", "The path does not serve this method"

    def __init__(self, allowed: list[str]) -> None:
        super().__init__("Method not allowed.", headers={"Allow": ", ".join(allowed)})


class Conflict(ApiError):
    """The request's emails already belong to a contact and the client asked not to merge."""

    status, code, summary = 409, "conflict", "The emails are known and on_conflict=error was asked"
    body = "ConflictBody"

    def __init__(self, message: str, existing_contact_id: int) -> None:
        super().__init__(message, existing_contact_id=existing_contact_id)
        self.existing_contact_id = existing_contact_id


class PayloadTooLarge(ApiError):
    status, code, summary = 413, "payload_too_large", "The body is larger than the limit"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit} bytes.")


class InvalidInput(ApiError):
    """Validation failed: `errors` maps each field path to its messages, as Laravel does."""

    status, code, summary = 422, "validation_failed", "Invalid parameters or body"
    body = "ValidationErrorBody"

    def __init__(self, errors: dict[str, list[str]], *, unlisted: int = 0, **extra: Any) -> None:
        super().__init__(laravel_summary(errors, unlisted), errors=errors, **extra)
        self.errors = errors


class BatchRefused(InvalidInput):
    """atomic=true and an item of the batch failed: nothing was stored. The body adds the
    batch's counts and every item's result to the validation error."""

    summary = "An item failed under atomic=true: nothing of the batch was stored"
    body = "BatchRefusedBody"


class IdempotencyMismatch(ApiError):
    """The Idempotency-Key was used before with another request (SPEC 6.2)."""

    status, code = 422, "idempotency_mismatch"
    summary = "The Idempotency-Key was used with another request"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used with another request (method, path, query or "
            "body); use a new key for a new request."
        )


class IdempotencyInFlight(ApiError):
    """A request with the same Idempotency-Key has not been answered yet (SPEC 6.2)."""

    status, code = 409, "idempotency_in_flight"
    summary = "A request with this Idempotency-Key is still being answered"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being answered; retry after a second.",
            headers={"Retry-After": "1"},
        )


class TooManyRequests(ApiError):
    """Over the limit; the rate-limit headers, Retry-After among them, come from the decision."""

    status, code, summary = 429, "rate_limited", "Over the Space's per-minute limit"


class HeadersTooLarge(ApiError):
    """The request's headers pass the limit in all (SPEC 6.8; middleware.header_bytes counts)."""

    status, code, summary = 431, "headers_too_large", "The request's headers are too large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request's headers are larger than {limit} bytes in all.")


class InternalError(ApiError):
    status, code, summary = 500, "internal_error", "Unexpected failure"

    def __init__(self) -> None:
        super().__init__("Internal server error.")


class ServiceUnavailable(ApiError):
    status, code, summary = 503, "database_unavailable", "The database is unavailable or busy"


class Overloaded(ApiError):
    """As many requests are in progress as `serve --limit-concurrency` allows (SPEC 6.8)."""

    status, code, summary = 503, "overloaded", "Too many requests in progress; retry in a second"

    def __init__(self) -> None:
        super().__init__(
            "The server is answering as many requests as it is allowed to; retry in a second.",
            headers={"Retry-After": "1"},
        )


class SchemaOutdated(ApiError):
    status, code, summary = 503, "schema_outdated", "The schema is not this version's"


def render(error: ApiError, request_id: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers and JSON body of an error answer: `message`, the error's own
    fields, `code` and `request_id`."""
    content = orjson.dumps({**error.content(), "request_id": request_id})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in error.headers.items()),
    ]
    return error.status, headers, content


def laravel_summary(errors: dict[str, list[str]], unlisted: int = 0) -> str:
    """The first message, then "(and N more errors)" when there are more, as Laravel writes it."""
    messages = [message for field_messages in errors.values() for message in field_messages]
    if not messages:
        return "The given data was invalid."
    more = len(messages) - 1 + unlisted
    if more == 0:
        return messages[0]
    return f"{messages[0]} (and {more} more error{'s' if more > 1 else ''})"


def invalid(field: str, message: str) -> InvalidInput:
    """A validation error on a single field."""
    return InvalidInput({field: [message]})

"""The domain's errors, and the one place that turns them into HTTP status and JSON body."""

from typing import Any


class DomainError(Exception):
    """An expected refusal: its status and body are part of the API."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"message": self.message}

    def headers(self) -> dict[str, str]:
        return {}


class Unauthenticated(DomainError):
    status_code = 401

    def __init__(self) -> None:
        super().__init__("Unauthenticated.")


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    """The request's emails already belong to a contact and the client asked not to merge."""

    status_code = 409

    def __init__(self, message: str, existing_contact_id: int) -> None:
        super().__init__(message)
        self.existing_contact_id = existing_contact_id

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "existing_contact_id": self.existing_contact_id}


class InvalidInput(DomainError):
    """Validation failed: `errors` maps each field path to its messages, as Laravel does."""

    status_code = 422

    def __init__(self, errors: dict[str, list[str]], *, unlisted: int = 0, **extra: Any) -> None:
        super().__init__(laravel_summary(errors, unlisted))
        self.errors = errors
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "errors": self.errors, **self.extra}


class TooManyRequests(DomainError):
    """Over the limit; the rate-limit headers, Retry-After among them, come from the decision."""

    status_code = 429


class ServiceUnavailable(DomainError):
    status_code = 503


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

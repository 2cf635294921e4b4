"""Turns pydantic's validation errors into Laravel-style messages keyed by field path."""

import json
import re
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from contactbase.errors import InvalidInput

Model = TypeVar("Model", bound=BaseModel)

# Rule name -> message; {field} is the field's path, {value} the offending value as JSON.
MESSAGES = {
    "missing": "The {field} field is required.",
    "extra_forbidden": "The {field} field is not allowed.",
    "null": "The {field} field must not be null.",
    "string_type": "The {field} field must be a string ({value}).",
    "list_type": "The {field} field must be an array ({value}).",
    "dict_type": "The {field} field must be an object ({value}).",
    "model_type": "The {field} field must be an object ({value}).",
    "int_type": "The {field} field must be an integer ({value}).",
    "int_parsing": "The {field} field must be an integer ({value}).",
    "int_from_float": "The {field} field must be an integer ({value}).",
    "bool_type": "The {field} field must be true or false ({value}).",
    "bool_parsing": "The {field} field must be 1, 0, true or false ({value}).",
    "greater_than_equal": "The {field} field must be at least {ge} ({value}).",
    "less_than_equal": "The {field} field must not be greater than {le} ({value}).",
    "too_short": "The {field} field must have at least {min_length} item(s) ({value}).",
    "too_long": "The {field} field must not have more than {max_length} items "
    "({actual_length} sent).",
    "literal_error": "The {field} field must be {expected} ({value}).",
    "json_invalid": "The request body must be valid JSON ({error}).",
    "blank": "The {field} field must not be empty ({value}).",
    "too_many_characters": "The {field} field must not be greater than {max} characters ({value}).",
    "invalid_email": "The {field} field must be a valid email address ({value}).",
    "invalid_phone": "The {field} field must be a valid phone number: 4 to 20 digits, "
    "optionally a leading +, spaces, dashes, dots or parentheses ({value}).",
    "control_characters": "The {field} field must not contain control characters ({value}).",
    "float_type": "The {field} field must be a number ({value}).",
    "finite_number": "The {field} field must be a finite number ({value}).",
    "custom_date": "The {field} field must be a date: YYYY-MM-DD or an ISO 8601 date-time "
    "({value}).",
    "nothing_to_update": "At least one of emails, phones, names, locations or custom_fields "
    "is required.",
    "date_format": "The {field} field must match the format YYYY-MM-DD HH:MM:SS ({value}).",
    "date_order": "The {field} field must be a date after or equal to start_date ({value}).",
    "cursor": "The {field} field is not a valid cursor ({value}).",
    "positive_integer": "The {field} field must be a positive integer ({value}).",
    "filter_field": "The {field} field must be one of profile_field_1 to profile_field_30 "
    "({value}).",
    "filter_operator": "The {field} field must be one of {allowed} for a {slot_type} slot "
    "({value}).",
    "filter_operator_unknown": "The {field} field must be one of {allowed} ({value}).",
    "filter_value_required": "The {field} field is required with the {operator} operator.",
    "filter_value_unexpected": "The {field} field must be left out with the {operator} "
    "operator ({value}).",
    "filter_date": "The {field} field must be a date: YYYY-MM-DD ({value}).",
    "filter_days": "The {field} field must be a whole number of days, 0 to {max} ({value}).",
    "filter_date_order": "The {field} field must be a date after or equal to start ({value}).",
    "filter_json": "The {field} field must be valid JSON, an array of conditions ({error}).",
    "filter_parameter": "The {field} field must be sent as JSON or as "
    "custom_field_filters[N][field], [operator], [value], [start] and [end], N a whole "
    "number ({value}).",
    "filter_forms": "The {field} field must be sent either as JSON or in brackets, not both.",
    "too_many_values": "The {field} field would hold {count} values once merged into "
    "{contact}; a contact holds at most {max} {field}.",
}


class ValueRejected(ValueError):
    """A value broke a rule; `kind` names the rule, as schemas.py words its message."""

    def __init__(self, kind: str, **context: object) -> None:
        super().__init__(kind)
        self.kind = kind
        self.context = context


# Unicode's categories Cc (C0 and C1 controls: NUL breaks PostgreSQL text) and Cs (surrogates,
# which alone cannot be encoded as UTF-8), as the ranges they are (a test holds them equal).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def has_control_characters(text: str) -> bool:
    return CONTROL_CHARACTERS.search(text) is not None


FALLBACK = "The {field} field is invalid."
MAX_SHOWN = 60
MAX_LISTED = 100


def show(value: Any) -> str:
    """The offending value as JSON, shortened, and safe to encode as UTF-8."""
    if not isinstance(value, str):
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = str(value)
        if len(text) <= MAX_SHOWN:
            return text
        value = text  # a long array or object: shown as its shortened JSON text
    if len(value) > MAX_SHOWN:
        value = value[:MAX_SHOWN] + "…"
    # Control characters and lone surrogates are shown escaped.
    return json.dumps(value, ensure_ascii=has_control_characters(value))


def message_for(kind: str, field: str, value: Any, **context: Any) -> str:
    return MESSAGES.get(kind, FALLBACK).format(field=field, value=show(value), **context)


def _field_path(loc: tuple[int | str, ...], located: bool) -> str:
    """The field's path; FastAPI's errors (`located`) start with where it was: body, query."""
    parts = [str(part) for part in loc]
    if located and parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _describe(error: ErrorDetails, located: bool) -> tuple[str, str]:
    field = _field_path(error["loc"], located)
    kind = error["type"]
    context: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    rejected = context.get("error")
    if isinstance(context.get("field"), str):  # a rule across fields names the one it blames
        field, value = context["field"], context.get("value", value)
    if kind == "value_error" and isinstance(rejected, ValueRejected):
        kind, context = rejected.kind, dict(rejected.context)
    elif value is None and kind.endswith("_type"):
        kind = "null"
    if field == "body" and kind in ("model_type", "dict_type", "null"):
        return field, "The request body must be a JSON object."
    if isinstance(context.get("error"), BaseException):
        del context["error"]
    context = {key: val for key, val in context.items() if key not in ("field", "value")}
    try:
        return field, message_for(kind, field, value, **context)
    except (KeyError, IndexError):
        return field, FALLBACK.format(field=field)


def invalid_input(errors: list[ErrorDetails], *, located: bool = True) -> InvalidInput:
    """One InvalidInput holding the errors, messages grouped by field path in order: the first
    MAX_LISTED of them, so that a body of 50,000 unknown keys does not get a 5 MB answer (the
    summary still counts them all)."""
    grouped: dict[str, list[str]] = {}
    for error in errors[:MAX_LISTED]:
        field, message = _describe(error, located)
        grouped.setdefault(field, []).append(message)
    return InvalidInput(grouped, unlisted=max(0, len(errors) - MAX_LISTED))


def parse_body(model: type[Model], raw: bytes) -> Model:
    """Validate a JSON request body against `model`, or raise InvalidInput."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_input(exc.errors(include_url=False), located=False) from None


def parse_query(model: type[Model], request: Request) -> Model:
    """Validate the query string against `model` (a repeated name: its last value counts), or
    raise InvalidInput."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise invalid_input(exc.errors(include_url=False), located=False) from None

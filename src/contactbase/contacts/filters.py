"""Cometly's custom_field_filters (SPEC 6.7): conditions on the custom-field slots, as the list's
query string (JSON, or Laravel's bracket form) and the export's body send them, validated per the
slot's type, and in a canonical text that cursors are bound to. filter_clauses.py turns them
into SQL."""

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Annotated, Any

import pydantic_core
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from contactbase.contacts.custom_fields import (
    DATE_SLOTS,
    ISO_DATE,
    NUMBER_SLOTS,
    SLOTS,
    TEXT_SLOTS,
    clean_custom_text,
)
from contactbase.errors import InvalidInput
from contactbase.validation import ValueRejected, message_for

FIELD = "custom_field_filters"
MAX_CONDITIONS = 10
SLOT_TYPES = {
    **{f"profile_field_{n}": "text" for n in TEXT_SLOTS},
    **{f"profile_field_{n}": "number" for n in NUMBER_SLOTS},
    **{f"profile_field_{n}": "date" for n in DATE_SLOTS},
}
OPERATORS = {
    "text": (
        "equal_to",
        "not_equal_to",
        "contains",
        "not_contains",
        "starts_with",
        "ends_with",
        "contains_word",
        "any",
        "unknown",
    ),
    "number": (
        "equal_to",
        "not_equal_to",
        "greater_than",
        "greater_than_or_equal_to",
        "less_than",
        "less_than_or_equal_to",
        "any",
        "unknown",
    ),
    "date": (
        "equal_to",
        "between",
        "greater_than",
        "less_than",
        "age_greater_than",
        "age_equal_to",
        "age_less_than",
        "any",
        "unknown",
    ),
}
EVERY_OPERATOR = tuple(dict.fromkeys(op for ops in OPERATORS.values() for op in ops))
WITHOUT_VALUE = ("any", "unknown", "between")
AGES = ("age_greater_than", "age_equal_to", "age_less_than")
# No two days of the calendar (0001-01-01 to 9999-12-31) lie further apart.
MAX_DAYS = (date.max - date.min).days
# PHP's is_numeric without its spaces and hexadecimals: what a number sent as text may look like.
NUMBER_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
BRACKETS = re.compile(
    rf"{FIELD}\[(0|[1-9][0-9]{{0,8}})\]\[(field|operator|value|start|end)\]", re.ASCII
)


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


def _absent(value: Any) -> bool:
    """Left out, null or empty: how clients send 'no value' (the bracket form has only text)."""
    return value is None or value == ""


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueRejected("string_type")
    return clean_custom_text(value)


def _number(value: Any) -> float:
    """A JSON number, or a number as text (the bracket form sends nothing else)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueRejected("float_type")
    if isinstance(value, str) and not NUMBER_TEXT.fullmatch(value):
        raise ValueRejected("float_type")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the doubles
        raise ValueRejected("finite_number") from None
    if not math.isfinite(number):
        raise ValueRejected("finite_number")
    return number + 0.0  # -0.0 as 0.0: one text for one number in `canonical`


def _day(value: Any) -> str:
    """A date as `YYYY-MM-DD` only: a date-time's day would depend on a zone the client may not
    mean."""
    try:
        if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueRejected("filter_date") from None


def _days(value: Any) -> int:
    """A whole number of days: a JSON integer or digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 7:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        raise ValueRejected("filter_days", max=MAX_DAYS)
    return value


class Condition(BaseModel):
    """One condition of custom_field_filters: a slot, an operator that fits the slot's type, and
    its operand (`value`, or `start` and `end` for `between`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    field: str = Field(
        description="profile_field_1 to 15 (text), 16 to 25 (numbers), 26 to 30 (dates).",
        json_schema_extra={"enum": list(SLOTS)},
    )
    operator: str = Field(
        description="Text: equal_to, not_equal_to, contains, not_contains, starts_with, "
        "ends_with, contains_word, any, unknown. Numbers: equal_to, not_equal_to, greater_than, "
        "greater_than_or_equal_to, less_than, less_than_or_equal_to, any, unknown. Dates: "
        "equal_to, between, greater_than, less_than, age_greater_than, age_equal_to, "
        "age_less_than, any, unknown.",
        json_schema_extra={"enum": list(EVERY_OPERATOR)},
    )
    # Validated even when left out (validate_default), so that a missing one is named.
    value: Any = Field(
        default=None,
        validate_default=True,
        description="Text: a string (case ignored). Numbers: a number, or one as a string. "
        "Dates: YYYY-MM-DD. age_*: whole days before today in the Space's timezone. Left out "
        "(or null, or empty) for any, unknown and between.",
    )
    start: Any = Field(
        default=None,
        validate_default=True,
        description="between only: the first day, YYYY-MM-DD, inclusive.",
    )
    end: Any = Field(
        default=None,
        validate_default=True,
        description="between only: the last day, YYYY-MM-DD, inclusive.",
    )

    @property
    def slot_type(self) -> str:
        """text, number or date."""
        return SLOT_TYPES[self.field]

    # Field validators, not a model validator: an error is then placed on the field it is
    # about (custom_field_filters.3.operator). Each reads the fields before it in info.data,
    # where a field that failed is missing: then the ones after it are not judged.
    @field_validator("field")
    @classmethod
    def _known_slot(cls, slot: str) -> str:
        if slot not in SLOT_TYPES:
            raise ValueRejected("filter_field")
        return slot

    @field_validator("operator")
    @classmethod
    def _fits_slot(cls, operator: str, info: ValidationInfo) -> str:
        slot = info.data.get("field")
        if slot is None:
            if operator not in EVERY_OPERATOR:
                raise ValueRejected("filter_operator_unknown", allowed=_listed(EVERY_OPERATOR))
        elif operator not in OPERATORS[SLOT_TYPES[slot]]:
            allowed = _listed(OPERATORS[SLOT_TYPES[slot]])
            raise ValueRejected("filter_operator", allowed=allowed, slot_type=SLOT_TYPES[slot])
        return operator

    @field_validator("value")
    @classmethod
    def _operand(cls, value: Any, info: ValidationInfo) -> Any:
        slot, operator = info.data.get("field"), info.data.get("operator")
        if slot is None or operator is None:
            return None
        if operator in WITHOUT_VALUE:
            if not _absent(value):
                raise ValueRejected("filter_value_unexpected", operator=operator)
            return None
        if value is None:
            raise ValueRejected("filter_value_required", operator=operator)
        if operator in AGES:
            return _days(value)
        kind = SLOT_TYPES[slot]
        if kind == "number":
            return _number(value)
        if kind == "date":
            return _day(value)
        if operator == "contains_word" and value == "":
            raise ValueRejected("blank")
        return _text(value)

    @field_validator("start", "end")
    @classmethod
    def _bound(cls, value: Any, info: ValidationInfo) -> str | None:
        operator = info.data.get("operator")
        if info.data.get("field") is None or operator is None:
            return None
        if operator != "between":
            if not _absent(value):
                raise ValueRejected("filter_value_unexpected", operator=operator)
            return None
        if value is None:
            raise ValueRejected("filter_value_required", operator=operator)
        day = _day(value)
        start = info.data.get("start")
        if info.field_name == "end" and start is not None and day < start:
            raise ValueRejected("filter_date_order")
        return day


def _from_json_text(value: Any, info: ValidationInfo) -> Any:
    """The query string sends the conditions as JSON text; a JSON body sends them as an array
    (there a string is a wrong type, as anywhere else in a body)."""
    if info.mode == "python" and isinstance(value, str):
        try:
            return pydantic_core.from_json(value)
        except ValueError as exc:
            raise ValueRejected("filter_json", error=str(exc)) from None
    return value


Filters = Annotated[
    list[Condition],
    BeforeValidator(_from_json_text),
    Field(
        max_length=MAX_CONDITIONS,
        description="At most 10 conditions, all of which must hold. In the query string as a "
        "JSON array, or in Laravel's bracket form: custom_field_filters[0][field]=…",
    ),
]


def gather_brackets(params: Mapping[str, str]) -> dict[str, Any]:
    """The query parameters with Laravel's bracket form (`custom_field_filters[0][field]`, ...)
    gathered into one `custom_field_filters`, a list of conditions in the order of their
    indexes (gaps closed: 0, 2, 5 are the first, second and third). A malformed bracket name,
    or both forms in one request: InvalidInput."""
    gathered: dict[str, Any] = {}
    conditions: dict[int, dict[str, str]] = {}
    for name, value in params.items():
        if not name.startswith(f"{FIELD}["):
            gathered[name] = value
            continue
        match = BRACKETS.fullmatch(name)
        if match is None:
            raise InvalidInput({FIELD: [message_for("filter_parameter", FIELD, name)]})
        conditions.setdefault(int(match[1]), {})[match[2]] = value
    if conditions:
        if FIELD in gathered:
            raise InvalidInput({FIELD: [message_for("filter_forms", FIELD, None)]})
        gathered[FIELD] = [conditions[index] for index in sorted(conditions)]
    return gathered


def canonical(conditions: Sequence[Condition]) -> str:
    """The conditions as one stable text, for a cursor to be bound to: normalised operands
    (numbers as doubles, a left-out value as null), keys sorted, conditions sorted (their order
    does not change what they select)."""
    texts = sorted(
        json.dumps(c.model_dump(), sort_keys=True, separators=(",", ":")) for c in conditions
    )
    return f"[{','.join(texts)}]"

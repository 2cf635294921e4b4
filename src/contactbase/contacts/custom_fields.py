"""The 30 custom-field slots: profile_field_1-15 text, 16-25 numbers, 26-30 dates."""

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    GetPydanticSchema,
    create_model,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from contactbase.validation import ValueRejected, has_control_characters

TEXT_SLOTS = range(1, 16)
NUMBER_SLOTS = range(16, 26)
DATE_SLOTS = range(26, 31)
SLOTS = tuple(f"profile_field_{n}" for n in range(1, 31))
MAX_CUSTOM_TEXT = 10_240
# Line breaks and tabs are fine in a free-text field; other controls and lone surrogates are not.
ALLOWED_CONTROLS = str.maketrans("", "", "\t\n\r")


def clean_custom_text(text: str) -> str:
    if len(text) > MAX_CUSTOM_TEXT:
        raise ValueRejected("too_many_characters", max=MAX_CUSTOM_TEXT)
    if has_control_characters(text.translate(ALLOWED_CONTROLS)):
        raise ValueRejected("control_characters")
    return text


ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_custom_date(text: str) -> str:
    """`YYYY-MM-DD`, or an ISO 8601 date-time (`YYYY-MM-DDTHH:MM…`, with `T` or a space) in UTC
    as `YYYY-MM-DDTHH:MM:SSZ` (one without an offset is taken as UTC): the canonical form that is
    stored and shown."""
    try:
        if not ISO_DATE.match(text):
            raise ValueError(text)
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        if text[10] not in "T ":
            raise ValueError(text)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueRejected("custom_date") from None
    # isoformat, not strftime: %Y leaves a year before 1000 unpadded, out of the text's order.
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


# The json_schema_extra only document the rules (the validators enforce them, with the API's
# own messages); the same types describe the slots in requests and in answers.
CustomText = Annotated[
    str,
    AfterValidator(clean_custom_text),
    Field(json_schema_extra={"maxLength": MAX_CUSTOM_TEXT}),
]
CustomNumber = Annotated[float, Field(allow_inf_nan=False)]
CustomDate = Annotated[
    str,
    AfterValidator(parse_custom_date),
    Field(
        json_schema_extra={
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?$",
            "examples": ["2026-11-26", "2026-11-26T08:00:00Z"],
        }
    ),
]


def _without_defaults(schema: dict[str, Any]) -> None:
    """The document shows no default: None stands for a slot not sent, not a value to send."""
    for slot in schema["properties"].values():
        slot.pop("default", None)


class CustomFields(BaseModel):
    """profile_field_1 to 15: text (at most 10,240 characters); 16 to 25: numbers; 26 to 30:
    dates (YYYY-MM-DD or ISO 8601 date-time). A slot may be left out, never sent as null."""

    # The default None marks a slot not sent; it is never validated, so a null sent is a 422.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_without_defaults)

    profile_field_1: CustomText = None  # type: ignore[assignment]
    profile_field_2: CustomText = None  # type: ignore[assignment]
    profile_field_3: CustomText = None  # type: ignore[assignment]
    profile_field_4: CustomText = None  # type: ignore[assignment]
    profile_field_5: CustomText = None  # type: ignore[assignment]
    profile_field_6: CustomText = None  # type: ignore[assignment]
    profile_field_7: CustomText = None  # type: ignore[assignment]
    profile_field_8: CustomText = None  # type: ignore[assignment]
    profile_field_9: CustomText = None  # type: ignore[assignment]
    profile_field_10: CustomText = None  # type: ignore[assignment]
    profile_field_11: CustomText = None  # type: ignore[assignment]
    profile_field_12: CustomText = None  # type: ignore[assignment]
    profile_field_13: CustomText = None  # type: ignore[assignment]
    profile_field_14: CustomText = None  # type: ignore[assignment]
    profile_field_15: CustomText = None  # type: ignore[assignment]
    profile_field_16: CustomNumber = None  # type: ignore[assignment]
    profile_field_17: CustomNumber = None  # type: ignore[assignment]
    profile_field_18: CustomNumber = None  # type: ignore[assignment]
    profile_field_19: CustomNumber = None  # type: ignore[assignment]
    profile_field_20: CustomNumber = None  # type: ignore[assignment]
    profile_field_21: CustomNumber = None  # type: ignore[assignment]
    profile_field_22: CustomNumber = None  # type: ignore[assignment]
    profile_field_23: CustomNumber = None  # type: ignore[assignment]
    profile_field_24: CustomNumber = None  # type: ignore[assignment]
    profile_field_25: CustomNumber = None  # type: ignore[assignment]
    profile_field_26: CustomDate = None  # type: ignore[assignment]
    profile_field_27: CustomDate = None  # type: ignore[assignment]
    profile_field_28: CustomDate = None  # type: ignore[assignment]
    profile_field_29: CustomDate = None  # type: ignore[assignment]
    profile_field_30: CustomDate = None  # type: ignore[assignment]


def slot_type(slot: str) -> Any:
    """The type of a slot by its number: text, number or date."""
    number = int(slot.rsplit("_", 1)[1])
    if number in TEXT_SLOTS:
        return CustomText
    return CustomNumber if number in NUMBER_SLOTS else CustomDate


class _Shown(BaseModel):
    # A labelled slot (the list's use_custom_field_labels=1) is shown under its label.
    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, str | float | None]


# Documents the slots as answers show them; the answers hold them as a plain dict (to_wire).
_shown_slots: dict[str, Any] = {slot: (slot_type(slot) | None, None) for slot in SLOTS}
CustomFieldValues = create_model(
    "CustomFieldValues",
    __base__=_Shown,
    __doc__="The slots as an answer shows them, typed as in requests: profile_field_1 to 15 "
    "text, 16 to 25 numbers, 26 to 30 dates (YYYY-MM-DD, or a date-time as YYYY-MM-DDTHH:MM:SSZ); "
    "null when not set. With use_custom_field_labels=1 a labelled slot is shown under its label.",
    **_shown_slots,
)


def _values_json_schema(_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
    """CustomFieldValues' schema, as a definition of its own that the field refers to."""
    model = CustomFieldValues.__pydantic_core_schema__
    reference = core_schema.definition_reference_schema(model["ref"])
    return handler(core_schema.definitions_schema(reference, [model]))


# The slots of a contact in an answer: a dict at run time, CustomFieldValues in the document.
ShownCustomFields = Annotated[
    dict[str, Any], GetPydanticSchema(lambda source, handler: handler(source), _values_json_schema)
]


def sent_slots(fields: BaseModel) -> dict[str, Any]:
    """The slots the client sent, as the database stores them."""
    return {slot: getattr(fields, slot) for slot in SLOTS if slot in fields.model_fields_set}


def to_wire(slots: dict[str, Any], *, every_slot: bool = False) -> dict[str, Any]:
    """A contact's slots as the API shows them: the set ones, or all 30 with nulls."""
    shown: dict[str, Any] = {}
    for slot in SLOTS:
        value = slots.get(slot)
        if value is None:
            if every_slot:
                shown[slot] = None
            continue
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)
        shown[slot] = value
    return shown

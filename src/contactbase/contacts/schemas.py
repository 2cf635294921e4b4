"""The contacts API's wire format: request bodies, query parameters and responses."""

import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contactbase.contacts.custom_fields import CustomFields, ShownCustomFields, to_wire
from contactbase.contacts.filters import Filters, gather_brackets
from contactbase.contacts.values import clean_email, clean_phone, clean_text
from contactbase.validation import ValueRejected, has_control_characters

MAX_ITEMS = 100

# The json_schema_extra only document the rules (the validators enforce them, with the API's
# own messages).
Email = Annotated[
    str, AfterValidator(clean_email), Field(json_schema_extra={"format": "email", "minLength": 3})
]
Phone = Annotated[
    str,
    AfterValidator(clean_phone),
    Field(json_schema_extra={"pattern": r"^\s*\+?[0-9 ().\-]{4,32}\s*$"}),
]
Text = Annotated[str, AfterValidator(clean_text), Field(json_schema_extra={"minLength": 1})]


@lru_cache(maxsize=256)
def wire_time(value: datetime) -> str:
    """A timestamp as it goes out: 2026-11-26T08:00:00Z (UTC, whole seconds). Cached: a
    batch's contacts share their times."""
    return value.isoformat(timespec="seconds") + "Z"


Timestamp = Annotated[
    datetime,
    PlainSerializer(wire_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-11-26T08:00:00Z"]}),
]


class ContactCreate(BaseModel):
    """A person to create, or to merge into the contact that already owns one of the emails."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "emails": ["john@example.com", "johnny@example.com"],
                    "phones": ["+1234567890", "+0987654321"],
                    "names": ["John Doe", "Johnny"],
                    "locations": ["New York, NY", "Los Angeles, CA"],
                }
            ]
        },
    )

    emails: list[Email] = Field(
        min_length=1,
        max_length=MAX_ITEMS,
        description="At least one email; the first is the primary. Emails identify the contact: "
        "compared trimmed and lower-cased, stored as sent (trimmed). At most 254 characters each.",
    )
    phones: list[Phone] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="4 to 20 digits, optionally a leading + and spaces, dashes, dots or "
        "parentheses, at most 32 characters. Compared by their digits.",
    )
    names: list[Text] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Non-empty after trimming, at most 255 characters.",
    )
    locations: list[Text] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Non-empty after trimming, at most 255 characters.",
    )
    custom_fields: CustomFields = Field(
        default_factory=CustomFields,
        description="Slots to set; on a merge they overwrite the contact's.",
    )


class ContactUpdate(BaseModel):
    """A sparse replace: each field sent replaces that whole collection; absent ones stay."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"names": ["John Doe"], "phones": []}], "minProperties": 1},
    )

    emails: list[Email] = Field(
        default_factory=list,
        min_length=1,
        max_length=MAX_ITEMS,
        description="Replaces every email (at least one); none may belong to another contact.",
    )
    phones: list[Phone] = Field(default_factory=list, max_length=MAX_ITEMS)
    names: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)
    locations: list[Text] = Field(default_factory=list, max_length=MAX_ITEMS)
    custom_fields: CustomFields = Field(
        default_factory=CustomFields,
        description="Replaces all 30 slots: slots not sent become null; {} clears them all.",
    )

    @model_validator(mode="after")
    def _something_sent(self) -> "ContactUpdate":
        if not self.model_fields_set:
            raise PydanticCustomError("nothing_to_update", "no field", {"field": "body"})
        return self


class ContactUpdated(BaseModel):
    """The contact's id and the fields that were sent, as stored."""

    id: int
    emails: list[str] | None = None
    phones: list[str] | None = None
    names: list[str] | None = None
    locations: list[str] | None = None
    custom_fields: ShownCustomFields | None = Field(
        default=None, description="When sent: the set slots, as stored."
    )


class ContactDetail(BaseModel):
    """A contact with every value it holds, the primary first."""

    id: int = Field(description="The contact's id; for an alias id, the survivor's.")
    emails: list[str]
    phones: list[str]
    names: list[str]
    locations: list[str]
    created_at: Timestamp
    updated_at: Timestamp
    custom_fields: ShownCustomFields | None = Field(
        default=None, description="The set custom-field slots; absent when none is set."
    )
    comet_tokens: list[Any] | None = Field(
        default=None, description="Only with include_comet_tokens=1; always empty here."
    )
    events: list[Any] | None = Field(
        default=None, description="Only with include_events=1; always empty here."
    )
    browsing_session_hits: list[Any] | None = Field(
        default=None, description="Only with include_browsing_session_data=1; always empty here."
    )

    @classmethod
    def of(
        cls,
        contact_id: int,
        values: dict[str, list[str]],
        slots: dict[str, Any],
        created_at: datetime,
        updated_at: datetime,
    ) -> "ContactDetail":
        """The contact as the API shows it; `custom_fields` only when a slot is set."""
        shown = to_wire(slots)
        extra = {"custom_fields": shown} if shown else {}
        return cls(id=contact_id, created_at=created_at, updated_at=updated_at, **values, **extra)


class ContactSummary(BaseModel):
    """A contact's primary values, as the list shows them."""

    id: int
    email: str
    name: str | None
    phone: str | None
    location: str | None
    emails: list[str] | None = Field(default=None, description="Only with include_all_emails=1.")
    comet_tokens: list[Any] | None = Field(
        default=None, description="Only with include_comet_tokens=1; always empty here."
    )
    custom_fields: ShownCustomFields | None = Field(
        default=None,
        description="Only with include_custom_fields=1: the 30 slots, null when not set (under "
        "their labels with use_custom_field_labels=1).",
    )


class ContactPage(BaseModel):
    """One page of the list, in Laravel's cursor-pagination envelope."""

    data: list[ContactSummary]
    path: str
    per_page: int
    next_cursor: str | None
    next_page_url: str | None
    prev_cursor: str | None
    prev_page_url: str | None


LOCAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


def _check_local_time(text: str | None) -> str | None:
    """Exactly YYYY-MM-DD HH:MM:SS (ASCII digits, fixed width, so the strings order as the
    times do), and a real date and time."""
    if text is not None:
        try:
            if not LOCAL_TIME.fullmatch(text):
                raise ValueError(text)
            datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise ValueRejected("date_format") from None
    return text


LocalTime = Annotated[str | None, AfterValidator(_check_local_time)]


def _check_printable(text: str | None) -> str | None:
    if text is not None and has_control_characters(text):
        raise ValueRejected("control_characters")
    return text


def _check_order(start: str | None, end: str | None) -> None:
    """end_date may not be before start_date (checked formats compare as the times do)."""
    if start and end and end < start:
        raise PydanticCustomError(
            "date_order", "end_date is before start_date", {"field": "end_date", "value": end}
        )


# A look-up value: control characters (NUL above all, which PostgreSQL refuses) are a 422.
Printable = Annotated[str | None, AfterValidator(_check_printable)]
Flag = Annotated[bool, Field(description="1 or 0 (true or false).")]


class GetQuery(BaseModel):
    """Cometly's documented options for one contact; data contactbase does not hold is empty."""

    model_config = ConfigDict(extra="forbid")

    include_comet_tokens: Flag = False
    include_events: Flag = False
    hide_direct_touchpoints: Flag = True
    use_custom_field_labels: Flag = False
    include_browsing_session_data: Flag = False


class ListQuery(BaseModel):
    """Filters and paging of the contact list."""

    model_config = ConfigDict(extra="forbid")

    start_date: LocalTime = Field(
        default=None,
        description="YYYY-MM-DD HH:MM:SS in the Space's timezone; creation time, inclusive.",
        examples=["2026-11-01 00:00:00"],
    )
    end_date: LocalTime = Field(
        default=None,
        description="YYYY-MM-DD HH:MM:SS in the Space's timezone; creation time, inclusive.",
        examples=["2026-11-30 23:59:59"],
    )
    per_page: int = Field(default=200, ge=1, le=5000)
    cursor: str | None = Field(default=None, description="next_cursor or prev_cursor of a page.")
    email: Printable = Field(default=None, description="Only the contact owning this email.")
    phone: Printable = Field(default=None, description="Contacts holding this phone (by digits).")
    include_all_emails: Flag = False
    include_comet_tokens: Flag = False
    include_custom_fields: Flag = False
    use_custom_field_labels: Flag = Field(
        default=False,
        description="With include_custom_fields=1: slots named by the Space's labels "
        "(`contactbase space set-label`); a slot without one keeps its name.",
    )
    custom_field_filters: Filters | None = None

    @model_validator(mode="before")
    @classmethod
    def _bracket_form(cls, params: Any) -> Any:
        """Laravel's bracket form of the filters, gathered as the JSON form would send them."""
        return gather_brackets(params) if isinstance(params, dict) else params

    @model_validator(mode="after")
    def _end_not_before_start(self) -> "ListQuery":
        _check_order(self.start_date, self.end_date)
        return self


class NoQuery(BaseModel):
    """An endpoint without query parameters: any is refused."""

    model_config = ConfigDict(extra="forbid")


class CreateQuery(BaseModel):
    """Options of a create."""

    model_config = ConfigDict(extra="forbid")

    on_conflict: Literal["merge", "error"] = Field(
        default="merge",
        description="merge (default): known emails merge the request into their contact (200). "
        "error: known emails refuse the request with 409 and change nothing.",
    )


class ExportRequest(BaseModel):
    """The creation window of the contacts to export, in the Space's timezone, inclusive."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"start_date": "2026-11-01 00:00:00", "end_date": "2026-11-30 23:59:59"}]
        },
    )

    start_date: Annotated[str, AfterValidator(_check_local_time)] = Field(
        description="YYYY-MM-DD HH:MM:SS in the Space's timezone, inclusive."
    )
    end_date: Annotated[str, AfterValidator(_check_local_time)] = Field(
        description="YYYY-MM-DD HH:MM:SS in the Space's timezone, inclusive."
    )
    custom_field_filters: Filters | None = None

    @model_validator(mode="after")
    def _end_not_before_start(self) -> "ExportRequest":
        _check_order(self.start_date, self.end_date)
        return self


class DownloadQuery(BaseModel):
    """The signature of a download link."""

    model_config = ConfigDict(extra="forbid")

    expires: int = Field(description="Unix time after which the link is refused.")
    signature: str = Field(description="HMAC-SHA256 of the export id and `expires`, hex.")


class ExportStatus(BaseModel):
    """Where an export stands; a completed one has a signed download link."""

    export_id: str
    status: Literal["queued", "processing", "completed", "failed"]
    created_at: Timestamp | None = None
    message: str | None = Field(
        default=None, description="While queued or processing, or why it failed."
    )
    download_url: str | None = Field(
        default=None,
        description="Gzipped NDJSON, one contact per line; needs no key; expires 15 minutes "
        "after completion (then 403).",
    )
    completed_at: Timestamp | None = None
    expires_at: Timestamp | None = None


class ChangesQuery(BaseModel):
    """Where to read the change feed from."""

    model_config = ConfigDict(extra="forbid")

    after: int = Field(
        default=0,
        ge=0,
        le=2**63 - 1,
        description="The `seq` (or `next_after`) read last; 0 (default) from the start.",
    )
    limit: int = Field(default=100, ge=1, le=1000, description="Events at most, 1 to 1,000.")


class Change(BaseModel):
    """One committed change of a contact: ids and a time, never a value."""

    seq: int = Field(description="Increases within the Space, in the order the changes committed.")
    type: Literal["contact.created", "contact.updated", "contact.merged", "contact.erased"]
    contact_id: int
    merged_into: int | None = Field(
        description="For contact.merged: the contact it is now part of."
    )
    occurred_at: Timestamp


class ChangePage(BaseModel):
    """Events after `after`, in `seq` order."""

    data: list[Change]
    next_after: int = Field(description="The `after` of the next read (equals `after` when empty).")

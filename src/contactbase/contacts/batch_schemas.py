"""The wire format of POST /contacts/batch: its query, its body (read item by item), and its
answer."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contactbase.contacts.schemas import ContactCreate, ContactDetail, CreateQuery
from contactbase.errors import InvalidInput
from contactbase.validation import invalid_input, parse_body

MAX_BATCH = 1000


class BatchQuery(CreateQuery):
    """Options of a batch upsert."""

    atomic: bool = Field(
        default=False,
        description="false (default): a failed item does not stop the others (207). true: any "
        "failed item means nothing of the batch is stored (422, with every item's result).",
    )


class BatchRequest(BaseModel):
    """Up to 1,000 contacts, each exactly the body of `POST /contacts`, handled in order."""

    model_config = ConfigDict(extra="forbid")

    contacts: list[ContactCreate] = Field(min_length=1, max_length=MAX_BATCH)


class _BatchEnvelope(BaseModel):
    """The batch's outer shape; each item is validated on its own (`read_batch`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    contacts: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


def read_batch(raw: bytes) -> list[ContactCreate | InvalidInput]:
    """The items of a batch body, each a ContactCreate or the reasons it is not one. A body
    whose outer shape is wrong is refused whole (422)."""
    return [read_item(item) for item in parse_body(_BatchEnvelope, raw).contacts]


def read_item(item: Any) -> ContactCreate | InvalidInput:
    """One item of a batch or an import, parsed from JSON: validated as the body of
    `POST /contacts` is (the same messages), or the reasons it is not one."""
    if not isinstance(item, dict):
        return InvalidInput({"body": ["Each item must be a JSON object."]})
    try:
        return ContactCreate.model_validate(item)
    except ValidationError as exc:
        return invalid_input(exc.errors(include_url=False), located=False)


class BatchItemDone(BaseModel):
    """An item created (201) or merged (200)."""

    index: int = Field(description="The item's position in `contacts`, from 0.")
    status: Literal[200, 201]
    contact: ContactDetail | None = Field(
        default=None,
        description="The contact as it stood after this item; absent when the batch was "
        "refused under atomic=true (nothing was stored).",
    )


class BatchItemFailed(BaseModel):
    """An item refused: 422 (invalid) or 409 (its emails are known and on_conflict=error)."""

    index: int
    status: Literal[409, 422]
    code: str = Field(description="`validation_failed` or `conflict` (SPEC 6.1).")
    message: str
    errors: dict[str, list[str]] | None = Field(default=None, description="On 422: by field.")
    existing_contact_id: int | None = Field(default=None, description="On 409.")


class BatchResult(BaseModel):
    """Every item's result, in request order."""

    created: int = Field(description="Items answered 201.")
    merged: int = Field(description="Items answered 200.")
    failed: int = Field(description="Items answered 409 or 422.")
    results: list[BatchItemDone | BatchItemFailed]

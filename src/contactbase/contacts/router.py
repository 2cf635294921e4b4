"""HTTP shape of the contacts endpoints, /public-api/v1/contacts: each operation declared once
(contactbase.dispatch), its handler given the caller and its parsed query and body."""

from collections import Counter
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

import orjson
from pydantic import BaseModel
from starlette.responses import FileResponse, Response

from contactbase.contacts import (
    changes,
    erasure,
    exports,
    filter_clauses,
    filters,
    listing,
    reads,
    updates,
    writes,
)
from contactbase.contacts.batch_schemas import BatchQuery, BatchRequest, BatchResult, read_batch
from contactbase.contacts.pagination import (
    MAX_ID,
    Cursor,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
)
from contactbase.contacts.schemas import (
    ChangePage,
    ChangesQuery,
    ContactCreate,
    ContactDetail,
    ContactPage,
    ContactUpdate,
    ContactUpdated,
    CreateQuery,
    DownloadQuery,
    ExportRequest,
    ExportStatus,
    GetQuery,
    ListQuery,
    NoQuery,
    wire_time,
)
from contactbase.derived_keys import CURSORS, DOWNLOADS, derive
from contactbase.dispatch import Api, Call, error_response
from contactbase.errors import (
    ApiError,
    BatchRefused,
    Conflict,
    DownloadLinkInvalid,
    InvalidInput,
    NotFound,
    SpaceInactive,
    invalid,
)
from contactbase.prepared import Connection
from contactbase.spaces import access
from contactbase.spaces.service import signing_secret
from contactbase.validation import message_for

API_BASE = "/public-api/v1"
api = Api(API_BASE)

CONTACT_ID = {
    "contact_id": {
        "description": "A contact id; an alias id names its survivor.",
        "schema": {"type": "string", "pattern": "^0*[1-9][0-9]*$", "examples": ["17"]},
    }
}
BINARY = {"type": "string", "format": "binary"}
EXPORT_ID = {"export_id": {"description": "The export's id.", "schema": {"type": "string"}}}


def answer(model: BaseModel, status_code: int = 200) -> Response:
    """The model as JSON, fields never set left out (the declared response model documents it)."""
    return Response(
        model.model_dump_json(exclude_unset=True),
        status_code=status_code,
        media_type="application/json",
    )


def parse_id(contact_id: str) -> int:
    """The id in the path: 422 unless a positive integer, 404 when too large to exist."""
    digits = contact_id.lstrip("0")
    if not contact_id.isascii() or not contact_id.isdigit() or not digits:
        raise invalid("id", message_for("positive_integer", "id", contact_id))
    # Too many digits to be an id at all: unknown, like any other id (and never parsed whole).
    if len(digits) > len(str(MAX_ID)) or int(digits) > MAX_ID:
        raise NotFound(f"No contact with id {digits}.")
    return int(digits)


async def signing_key(call: Call[Any, Any], purpose: str) -> bytes:
    """The key of one purpose (derived_keys), from the service's secret: the settings', else
    the database's, read once (on the request's connection)."""
    state = call.state
    if state.signing_key is None:
        state.signing_key = await signing_secret(await call.lease.connect())
    return derive(state.signing_key, purpose)


@api.operation(
    "POST",
    "/contacts",
    operation_id="createContact",
    idempotent=True,
    access=access.CREATE,
    query=CreateQuery,
    body=ContactCreate,
    status=201,
    response=ContactDetail,
    summary="Create a contact (or merge into the one that owns its emails)",
    errors=(Conflict,),
    answers={"200": {"model": ContactDetail, "description": "Merged into an existing contact"}},
)
async def create_contact(call: Call[CreateQuery, ContactCreate]) -> Response:
    """Create a contact from arrays of emails, phones, names and locations; the first item of
    each array becomes the primary value.

    If none of the emails is known in the Space, the contact is created (201). If some belong
    to existing contacts, the request is merged into them (200): new values are appended,
    existing primaries stay, and several matching contacts are merged into the oldest, whose id
    the others keep resolving to. With `on_conflict=error`, known emails give 409 instead.
    """
    merge = call.query.on_conflict == "merge"
    if call.claim is None:
        contact, created = await writes.create_contact(
            call.lease, call.caller.space_id, call.body, merge=merge
        )
        return answer(contact, 201 if created else 200)
    # With an Idempotency-Key, the answer is stored in the transaction of the write.
    answered: list[Response] = []

    async def then(connection: Connection, outcomes: list[writes.Outcome]) -> None:
        (outcome,) = outcomes
        if outcome.refusal is not None:
            response = error_response(outcome.refusal, call.request.scope)
        else:
            assert outcome.contact is not None
            response = answer(outcome.contact, outcome.status)
        await call.keep(connection, response, outcome.named())
        answered.append(response)

    item = writes.incoming(call.body)
    await writes.upsert_batch(call.lease, call.caller.space_id, [item], merge=merge, then=then)
    return answered[-1]


@api.operation(
    "POST",
    "/contacts/batch",
    operation_id="batchUpsertContacts",
    idempotent=True,
    access=access.BATCH,
    query=BatchQuery,
    body=BatchRequest,
    read=read_batch,
    response=BatchResult,
    summary="Create or merge up to 1,000 contacts in one request",
    errors=(BatchRefused,),
    answers={"207": {"model": BatchResult, "description": "Some items failed; the others stand"}},
)
async def upsert_contacts(call: Call[BatchQuery, list[ContactCreate | InvalidInput]]) -> Response:
    """Each item is handled in order with the rules of `POST /contacts` (validation, identity,
    merge); an item whose emails meet an earlier item's resolves to the same contact. Each item
    is all of its values or none. The answer lists every item once, in order: 201 created, 200
    merged (each with the contact as it stood after the item), 422 invalid, 409 known emails
    under `on_conflict=error`. 200 when every item succeeded, 207 when some failed. With
    `atomic=true`, a failed item means nothing of the batch is stored: 422, with every item's
    result (the others as they would have been, without a contact)."""
    sent, query = call.body, call.query
    valid = [writes.incoming(item) for item in sent if isinstance(item, ContactCreate)]
    answered: list[Response] = []

    async def then(connection: Connection, outcomes: list[writes.Outcome]) -> None:
        response = _batch_answer(call, outcomes)
        named = [contact for outcome in outcomes for contact in outcome.named()]
        await call.keep(connection, response, named)
        answered.append(response)

    await writes.upsert_batch(
        call.lease,
        call.caller.space_id,
        valid,
        merge=query.on_conflict == "merge",
        write=not (query.atomic and len(valid) < len(sent)),
        atomic=query.atomic,
        then=then,
    )
    return answered[-1]


def _batch_answer(
    call: Call[BatchQuery, list[ContactCreate | InvalidInput]], outcomes: list[writes.Outcome]
) -> Response:
    """200 or 207 with every item's result in order; under atomic=true with a failed item,
    the 422 of BatchRefused."""
    sent = call.body
    done = iter(outcomes)
    results = [
        _batch_failure(index, 422, item)
        if isinstance(item, InvalidInput)
        else _batch_result(index, next(done))
        for index, item in enumerate(sent)
    ]
    counts = Counter(result["status"] for result in results)
    created, merged = counts[201], counts[200]
    failed = len(results) - created - merged
    totals = {"created": created, "merged": merged, "failed": failed}
    if failed and call.query.atomic:
        refused = BatchRefused(_batch_errors(sent, results), **totals, results=results)
        return error_response(refused, call.request.scope)
    body = orjson.dumps({**totals, "results": results})
    return Response(body, status_code=207 if failed else 200, media_type="application/json")


def _batch_result(index: int, outcome: writes.Outcome) -> dict[str, Any]:
    if outcome.refusal is not None:
        return _batch_failure(index, outcome.status, outcome.refusal)
    result: dict[str, Any] = {"index": index, "status": outcome.status}
    contact = outcome.wire()
    if contact is not None:
        result["contact"] = contact
    return result


def _batch_failure(index: int, status: int, error: ApiError) -> dict[str, Any]:
    return {"index": index, "status": status, **error.content()}


def _batch_errors(
    sent: list[ContactCreate | InvalidInput], results: list[dict[str, Any]]
) -> dict[str, list[str]]:
    """The failed items' reasons, under `contacts.N.` (a refusal's under its emails)."""
    errors: dict[str, list[str]] = {}
    for item, result in zip(sent, results, strict=True):
        prefix = f"contacts.{result['index']}"
        if isinstance(item, InvalidInput):
            for field, messages in item.errors.items():
                errors[f"{prefix}.{field}"] = messages
        elif result["status"] == 409:
            errors[f"{prefix}.emails"] = [result["message"]]
        elif "errors" in result:  # refused by the write path: a collection past the cap
            for field, messages in result["errors"].items():
                errors[f"{prefix}.{field}"] = messages
    return errors


@api.operation(
    "GET",
    "/contacts/{contact_id}",
    operation_id="getContact",
    access=access.GET,
    query=GetQuery,
    response=ContactDetail,
    summary="Get a contact",
    errors=(NotFound,),
    parameters=CONTACT_ID,
)
async def get_contact(call: Call[GetQuery, None]) -> Response:
    """One contact with all its emails, phones, names and locations, primary first."""
    contact_id = parse_id(call.params["contact_id"])
    connection = await call.lease.connect()
    contact = await reads.get_contact(connection, call.caller.space_id, contact_id)
    await call.lease.release()
    if call.query.include_comet_tokens:
        contact.comet_tokens = []
    if call.query.include_events:
        contact.events = []
    if call.query.include_browsing_session_data:
        contact.browsing_session_hits = []
    return answer(contact)


@api.operation(
    "PUT",
    "/contacts/{contact_id}",
    operation_id="updateContact",
    access=access.UPDATE,
    query=NoQuery,
    body=ContactUpdate,
    response=ContactUpdated,
    summary="Update a contact (sparse replace)",
    errors=(NotFound,),
    parameters=CONTACT_ID,
)
async def update_contact(call: Call[NoQuery, ContactUpdate]) -> Response:
    """Replace the collections sent: each of `emails`, `phones`, `names`, `locations` present
    replaces that whole collection (its first item becoming the primary; `[]` clears it, except
    `emails`, which keeps at least one); `custom_fields` replaces all 30 slots. Absent fields stay
    as they are. An email of another contact is a 422 naming it. Answers with the id and the
    fields sent, as stored.
    """
    contact_id = parse_id(call.params["contact_id"])
    updated = await updates.update_contact(call.lease, call.caller.space_id, contact_id, call.body)
    return answer(updated)


@api.operation(
    "GET",
    "/contacts/changes",
    operation_id="listContactChanges",
    access=access.CHANGES,
    query=ChangesQuery,
    response=ChangePage,
    summary="Follow every change of the Space's contacts",
    errors=(changes.ChangesExpired,),
)
async def list_changes(call: Call[ChangesQuery, None]) -> Response:
    """The events after `after` (a `seq`, or the last `next_after`), in `seq` order: every
    create, update, merge and erasure, appended in the transaction of the change, carrying ids
    and never a value. Poll with the `next_after` of each answer: no event is missed or seen
    twice, however many writers commit at once. Events are kept 30 days; an `after` older than
    that is a 410 that names the oldest `after` still served (re-read the list, then follow
    from there)."""
    query = call.query
    rows = await changes.page(call.lease, call.caller.space_id, query.after, query.limit)
    data = [
        {
            "seq": row.seq,
            "type": row.type,
            "contact_id": row.contact_id,
            "merged_into": row.merged_into,
            "occurred_at": wire_time(row.occurred_at),
        }
        for row in rows
    ]
    next_after = rows[-1].seq if rows else query.after
    return Response(
        orjson.dumps({"data": data, "next_after": next_after}), media_type="application/json"
    )


@api.operation(
    "DELETE",
    "/contacts/{contact_id}",
    operation_id="deleteContact",
    access=access.ERASE,
    query=NoQuery,
    status=204,
    summary="Erase a contact and everything merged into it",
    errors=(NotFound,),
    parameters=CONTACT_ID,
    answers={"204": {"description": "Erased: the contact and its aliases answer 404 from now"}},
)
async def erase_contact(call: Call[NoQuery, None]) -> Response:
    """Erase the person the id names (an alias names the contact it was merged into): the
    contact, every contact merged into it, all their values and custom fields, and the stored
    Idempotency-Key answers that name any of them. Afterwards every one of those ids answers
    404 and the emails are free: a later create makes a new contact with a new id. What is
    kept is a tombstone per id (the id, the Space, the time), never a value. Needs the
    `contacts:delete` permission, which no key has unless it was asked for."""
    contact_id = parse_id(call.params["contact_id"])
    await erasure.erase_contact(call.lease, call.caller.space_id, contact_id=contact_id)
    return Response(status_code=204)


@api.operation(
    "GET",
    "/contacts",
    operation_id="listContacts",
    access=access.LIST,
    query=ListQuery,
    response=ContactPage,
    summary="List contacts, newest first",
)
async def list_contacts(call: Call[ListQuery, None]) -> Response:
    """Contacts of the Space, newest first, in pages joined by opaque cursors.

    `start_date` and `end_date` filter on the creation time in the Space's timezone, both
    inclusive; `email` and `phone` find contacts by the same normal forms that identify them.
    """
    caller, query = call.caller, call.query
    key = await signing_key(call, CURSORS)
    conditions = query.custom_field_filters or []
    bound = filters.canonical(conditions) if conditions else ""
    cursor = None
    if query.cursor is not None:
        try:
            cursor = decode_cursor(query.cursor, key, caller.space_id, bound)
        except InvalidCursor:
            raise invalid("cursor", message_for("cursor", "cursor", query.cursor)) from None
    start, end = reads.creation_window(query.start_date, query.end_date, caller.timezone)
    chosen = reads.ListFilters(
        start=start,
        end=end,
        email=query.email,
        phone=query.phone,
        custom=filter_clauses.where(conditions, caller.timezone, reads.today_in(caller.timezone)),
    )
    labelled = query.include_custom_fields and query.use_custom_field_labels
    settings = call.state.settings
    request = call.request
    path = f"{listing.base_url(request, settings.public_url)}{API_BASE}/contacts"
    longest = encode_cursor(Cursor(MAX_ID, forward=False), key, caller.space_id, bound)
    budget = listing.items_budget(
        settings.max_response_bytes, path, query.per_page, request, longest, first=cursor is None
    )
    async with call.lease.session() as session:
        shape = listing.Shape(
            all_emails=query.include_all_emails,
            comet_tokens=query.include_comet_tokens,
            custom_fields=query.include_custom_fields,
            labels=await reads.slot_labels(session, caller.space_id) if labelled else {},
        )
        page = await listing.collect(
            session,
            caller.space_id,
            chosen,
            cursor,
            query.per_page,
            shape,
            budget,
        )
    # The connection is given back: the answer may go out as slowly as the client reads.
    forward = cursor is None or cursor.forward
    next_cursor = prev_cursor = None
    if page.ids and (page.has_more if forward else True):
        next_cursor = encode_cursor(Cursor(page.ids[-1], True), key, caller.space_id, bound)
    if page.ids and cursor is not None and (True if forward else page.has_more):
        prev_cursor = encode_cursor(Cursor(page.ids[0], False), key, caller.space_id, bound)
    cursors = (
        next_cursor,
        listing.link(path, request, next_cursor),
        prev_cursor,
        listing.link(path, request, prev_cursor),
    )
    return listing.chunked(listing.envelope(page, path, query.per_page, cursors))


EXPORT_MESSAGES = {"queued": "The export is queued.", "processing": "The export is being written."}


@api.operation(
    "POST",
    "/contacts/exports",
    operation_id="createExport",
    idempotent=True,
    access=access.EXPORT,
    query=NoQuery,
    body=ExportRequest,
    status=202,
    response=ExportStatus,
    errors=(exports.TooManyExports,),
    summary="Export the contacts created in a window",
)
async def create_export(call: Call[NoQuery, ExportRequest]) -> Response:
    """Queue an export of the Space's contacts created between `start_date` and `end_date`
    (the Space's timezone, inclusive), of those that meet `custom_field_filters` when given.
    Poll it with GET /contacts/exports/{export_id}. A Space has at most 3 exports queued or
    running at once (429 `too_many_exports` beyond)."""
    payload = call.body
    start, end = reads.creation_window(payload.start_date, payload.end_date, call.caller.timezone)
    assert start is not None
    assert end is not None
    conditions = payload.custom_field_filters or []
    async with call.lease.session(write=True) as session:
        export = await exports.queue_export(session, call.caller.space_id, start, end, conditions)
        queued = ExportStatus(
            export_id=export.id, status="queued", message=EXPORT_MESSAGES["queued"]
        )
        response = answer(queued, 202)
        await call.keep(session, response)
    return response


@api.operation(
    "GET",
    "/contacts/exports/{export_id}",
    operation_id="getExport",
    access=access.POLL_EXPORT,
    query=NoQuery,
    response=ExportStatus,
    summary="Poll an export",
    errors=(NotFound,),
    parameters=EXPORT_ID,
)
async def get_export(call: Call[NoQuery, None]) -> Response:
    """The export's status; when completed, a signed `download_url` valid for 15 minutes."""
    export_id = call.params["export_id"]
    key = await signing_key(call, DOWNLOADS)
    async with call.lease.session() as session:
        export = await exports.find_export(session, call.caller.space_id, export_id)
    status = ExportStatus(export_id=export.id, status=export.status, created_at=export.created_at)
    if export.status == "failed":
        status.message = export.failure
    elif export.status != "completed":
        status.message = EXPORT_MESSAGES[export.status]
    else:
        assert export.completed_at is not None
        expires_at = export.completed_at + exports.LINK_LIFETIME
        expires = int(expires_at.replace(tzinfo=UTC).timestamp())
        base = listing.base_url(call.request, call.state.settings.public_url)
        link = f"{base}{API_BASE}/contacts/exports/{export.id}"
        signature = exports.sign_download(key, export.id, expires)
        query = urlencode({"expires": expires, "signature": signature})
        status.download_url = f"{link}/download?{query}"
        status.completed_at = export.completed_at
        status.expires_at = expires_at
    return answer(status)


@api.operation(
    "GET",
    "/contacts/exports/{export_id}/download",
    operation_id="downloadExport",
    access=None,
    query=DownloadQuery,
    summary="Download an export (signed link, no key)",
    errors=(DownloadLinkInvalid, SpaceInactive),
    answers={
        "200": {
            "content": {"application/gzip": {"schema": BINARY}},
            "description": "Gzipped NDJSON",
        }
    },
    parameters=EXPORT_ID,
)
async def download_export(call: Call[DownloadQuery, None]) -> Response:
    """The export file: one contact per line (`id`, `email`, `name`, `phone`, `location`,
    `created_at`). The link is its own credential; it expires 15 minutes after completion."""
    export_id, query = call.params["export_id"], call.query
    key = await signing_key(call, DOWNLOADS)
    if not exports.is_export_id(export_id) or not exports.download_allowed(
        key, export_id, query.expires, query.signature
    ):
        raise DownloadLinkInvalid()
    async with call.lease.session() as session:
        directory = call.state.settings.export_dir
        path = await exports.completed_file(session, export_id, directory)
    if path is None:
        raise DownloadLinkInvalid()
    return FileResponse(
        path, media_type="application/gzip", filename=f"contacts-{export_id}.ndjson.gz"
    )

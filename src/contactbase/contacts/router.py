"""HTTP shape of the contacts endpoints: /public-api/v1/contacts."""

from datetime import UTC
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel

from contactbase.contacts import exports, reads, service
from contactbase.contacts.custom_fields import to_wire
from contactbase.contacts.pagination import (
    MAX_ID,
    Cursor,
    InvalidCursor,
    decode_cursor,
    encode_cursor,
)
from contactbase.contacts.schemas import (
    ContactCreate,
    ContactDetail,
    ContactPage,
    ContactSummary,
    ContactUpdate,
    ContactUpdated,
    CreateQuery,
    DownloadQuery,
    ExportRequest,
    ExportStatus,
    GetQuery,
    ListQuery,
    NoQuery,
)
from contactbase.db import direct, transaction
from contactbase.errors import Forbidden, NotFound, invalid
from contactbase.openapi import ERRORS, documented, error_responses
from contactbase.spaces import access
from contactbase.spaces.access import authorise, signing_key
from contactbase.validation import message_for, parse_body, parse_query

router = APIRouter(prefix="/public-api/v1/contacts", tags=["contacts"])

ContactId = Annotated[
    str,
    Path(
        description="A contact id; an alias id names its survivor.",
        examples=["17"],
        json_schema_extra={"pattern": "^0*[1-9][0-9]*$"},
    ),
]


def answer(model: BaseModel, status_code: int = 200) -> Response:
    """The model as JSON, fields never set left out (the route's response_model documents it)."""
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


@router.post(
    "",
    status_code=201,
    response_model=ContactDetail,
    response_model_exclude_unset=True,
    summary="Create a contact (or merge into the one that owns its emails)",
    responses={
        **error_responses(401, 403, 409, 413, 422, 429, 503),
        200: {"model": ContactDetail, "description": "Merged into an existing contact"},
        201: {"description": "Created"},
    },
    openapi_extra=documented(query=CreateQuery, body=ContactCreate),
)
async def create_contact(request: Request) -> Response:
    """Create a contact from arrays of emails, phones, names and locations; the first item of
    each array becomes the primary value.

    If none of the emails is known in the Space, the contact is created (201). If some belong
    to existing contacts, the request is merged into them (200): new values are appended,
    existing primaries stay, and several matching contacts are merged into the oldest, whose id
    the others keep resolving to. With `on_conflict=error`, known emails give 409 instead.
    """
    async with direct(request) as connection:
        caller = await authorise(request, connection, access.CREATE)
        query = parse_query(CreateQuery, request)
        payload = parse_body(ContactCreate, await request.body())
        new = await service.create_if_new(connection, caller.space_id, payload)
    if new is not None:
        return answer(new, 201)
    async with transaction(request) as session:
        contact, created = await service.create_contact(
            session, caller.space_id, payload, merge=query.on_conflict == "merge"
        )
    return answer(contact, 201 if created else 200)


@router.get(
    "/{contact_id}",
    response_model=ContactDetail,
    response_model_exclude_unset=True,
    summary="Get a contact",
    responses=error_responses(401, 403, 404, 422, 429, 503),
    openapi_extra=documented(query=GetQuery),
)
async def get_contact(request: Request, contact_id: ContactId) -> Response:
    """One contact with all its emails, phones, names and locations, primary first."""
    async with direct(request) as connection:
        caller = await authorise(request, connection, access.GET)
        query = parse_query(GetQuery, request)
        contact = await reads.get_contact(connection, caller.space_id, parse_id(contact_id))
    if query.include_comet_tokens:
        contact.comet_tokens = []
    if query.include_events:
        contact.events = []
    if query.include_browsing_session_data:
        contact.browsing_session_hits = []
    return answer(contact)


@router.put(
    "/{contact_id}",
    response_model=ContactUpdated,
    response_model_exclude_unset=True,
    summary="Update a contact (sparse replace)",
    responses=error_responses(401, 403, 404, 413, 422, 429, 503),
    openapi_extra=documented(query=NoQuery, body=ContactUpdate),
)
async def update_contact(request: Request, contact_id: ContactId) -> Response:
    """Replace the collections sent: each of `emails`, `phones`, `names`, `locations` present
    replaces that whole collection (its first item becoming the primary; `[]` clears it, except
    `emails`, which keeps at least one); `custom_fields` replaces all 30 slots. Absent fields stay
    as they are. An email of another contact is a 422 naming it. Answers with the id and the
    fields sent, as stored.
    """
    async with transaction(request) as session:
        caller = await authorise(request, session, access.UPDATE)
        parse_query(NoQuery, request)
        payload = parse_body(ContactUpdate, await request.body())
        updated = await service.update_contact(
            session, caller.space_id, parse_id(contact_id), payload
        )
    return answer(updated)


@router.get(
    "",
    response_model=ContactPage,
    response_model_exclude_unset=True,
    summary="List contacts, newest first",
    responses=error_responses(401, 403, 422, 429, 503),
    openapi_extra=documented(query=ListQuery),
)
async def list_contacts(request: Request) -> Response:
    """Contacts of the Space, newest first, in pages joined by opaque cursors.

    `start_date` and `end_date` filter on the creation time in the Space's timezone, both
    inclusive; `email` and `phone` find contacts by the same normal forms that identify them.
    """
    async with transaction(request) as session:
        caller = await authorise(request, session, access.LIST)
        query = parse_query(ListQuery, request)
        key = await signing_key(request, session)
        cursor = None
        if query.cursor is not None:
            try:
                cursor = decode_cursor(query.cursor, key, caller.space_id)
            except InvalidCursor:
                raise invalid("cursor", message_for("cursor", "cursor", query.cursor)) from None
        start, end = reads.creation_window(query.start_date, query.end_date, caller.timezone)
        filters = reads.ListFilters(start=start, end=end, email=query.email, phone=query.phone)
        rows, has_more = await reads.list_contacts(
            session,
            caller.space_id,
            filters,
            cursor,
            query.per_page,
            with_custom_fields=query.include_custom_fields,
        )
        emails = (
            await reads.all_emails(session, caller.space_id, [row.id for row in rows])
            if query.include_all_emails
            else {}
        )
    data = []
    for row in rows:
        item = ContactSummary(
            id=row.id, email=row.email, name=row.name, phone=row.phone, location=row.location
        )
        if query.include_all_emails:
            item.emails = emails[row.id]
        if query.include_comet_tokens:
            item.comet_tokens = []
        if query.include_custom_fields:
            item.custom_fields = to_wire(reads.slots_of(row), every_slot=True)
        data.append(item)
    return answer(_page(request, data, cursor, has_more, query.per_page, key, caller.space_id))


def _page(
    request: Request,
    data: list[ContactSummary],
    cursor: Cursor | None,
    has_more: bool,
    per_page: int,
    key: bytes,
    space_id: int,
) -> ContactPage:
    """Laravel's envelope: a next link unless this is the last page, a previous one unless the
    first; each carries the request's filters."""
    forward = cursor is None or cursor.forward
    next_cursor = prev_cursor = None
    if data and (has_more if forward else True):
        next_cursor = encode_cursor(Cursor(data[-1].id, forward=True), key, space_id)
    if data and cursor is not None and (True if forward else has_more):
        prev_cursor = encode_cursor(Cursor(data[0].id, forward=False), key, space_id)
    path = str(request.url.replace(query=""))

    def url(token: str | None) -> str | None:
        if token is None:
            return None
        params: dict[str, Any] = {k: v for k, v in request.query_params.items() if k != "cursor"}
        return f"{path}?{urlencode({**params, 'cursor': token})}"

    return ContactPage(
        data=data,
        path=path,
        per_page=per_page,
        next_cursor=next_cursor,
        next_page_url=url(next_cursor),
        prev_cursor=prev_cursor,
        prev_page_url=url(prev_cursor),
    )


EXPORT_MESSAGES = {"queued": "The export is queued.", "processing": "The export is being written."}


@router.post(
    "/exports",
    status_code=202,
    response_model=ExportStatus,
    response_model_exclude_unset=True,
    summary="Export the contacts created in a window",
    responses=error_responses(401, 403, 413, 422, 429, 503),
    openapi_extra=documented(query=NoQuery, body=ExportRequest),
)
async def create_export(request: Request) -> Response:
    """Queue an export of the Space's contacts created between `start_date` and `end_date`
    (the Space's timezone, inclusive). Poll it with GET /contacts/exports/{export_id}."""
    async with transaction(request) as session:
        caller = await authorise(request, session, access.EXPORT)
        parse_query(NoQuery, request)
        payload = parse_body(ExportRequest, await request.body())
        start, end = reads.creation_window(payload.start_date, payload.end_date, caller.timezone)
        assert start is not None
        assert end is not None
        export = await exports.queue_export(session, caller.space_id, start, end)
    status = ExportStatus(export_id=export.id, status="queued", message=EXPORT_MESSAGES["queued"])
    return answer(status, 202)


@router.get(
    "/exports/{export_id}",
    response_model=ExportStatus,
    response_model_exclude_unset=True,
    summary="Poll an export",
    responses=error_responses(401, 403, 404, 422, 429, 503),
    openapi_extra=documented(query=NoQuery),
)
async def get_export(request: Request, export_id: str) -> Response:
    """The export's status; when completed, a signed `download_url` valid for 15 minutes."""
    async with transaction(request) as session:
        caller = await authorise(request, session, access.POLL_EXPORT)
        parse_query(NoQuery, request)
        key = await signing_key(request, session)
        export = await exports.find_export(session, caller.space_id, export_id)
    status = ExportStatus(export_id=export.id, status=export.status, created_at=export.created_at)
    if export.status == "failed":
        status.message = export.failure
    elif export.status != "completed":
        status.message = EXPORT_MESSAGES[export.status]
    else:
        assert export.completed_at is not None
        expires_at = export.completed_at + exports.LINK_LIFETIME
        expires = int(expires_at.replace(tzinfo=UTC).timestamp())
        link = request.url_for("download_export", export_id=export.id)
        signature = exports.sign_download(key, export.id, expires)
        status.download_url = f"{link}?{urlencode({'expires': expires, 'signature': signature})}"
        status.completed_at = export.completed_at
        status.expires_at = expires_at
    return answer(status)


@router.get(
    "/exports/{export_id}/download",
    name="download_export",
    summary="Download an export (signed link, no key)",
    response_class=FileResponse,
    responses={
        **error_responses(422, 503),
        200: {"content": {"application/gzip": {}}, "description": "Gzipped NDJSON"},
        403: {"model": ERRORS[403][0], "description": "Link invalid or expired"},
    },
    openapi_extra=documented(query=DownloadQuery, secured=False),
)
async def download_export(request: Request, export_id: str) -> FileResponse:
    """The export file: one contact per line (`id`, `email`, `name`, `phone`, `location`,
    `created_at`). The link is its own credential; it expires 15 minutes after completion."""
    refused = Forbidden("This download link is invalid or has expired.")
    query = parse_query(DownloadQuery, request)
    async with transaction(request) as session:
        key = await signing_key(request, session)
        if not exports.is_export_id(export_id) or not exports.download_allowed(
            key, export_id, query.expires, query.signature
        ):
            raise refused
        directory = request.app.state.settings.export_dir
        path = await exports.completed_file(session, export_id, directory)
    if path is None:
        raise refused
    return FileResponse(
        path, media_type="application/gzip", filename=f"contacts-{export_id}.ndjson.gz"
    )


# The hottest endpoints, declared first: the app serves them by its express lane
# (middleware.ExpressLane). They take only the request and their path parameters.
EXPRESS = (create_contact, get_contact)

"""The list's page (SPEC 3 and 6.8), built so that no answer can exhaust a worker's memory:

- Contacts are read in batches and each is rendered to its JSON as it comes; the page stops
  when it holds `per_page` contacts or when the next contact would take its JSON past
  CONTACTBASE_MAX_RESPONSE_BYTES (a page holds at least one contact, whatever its size). A
  page stopped by its size has a `next_cursor` like any page with more after it.
- The page is read whole before anything is sent, and the database connection given back:
  streaming from an open cursor would let slow readers hold the pool.
- The answer goes out in body messages of at most 1 MiB, so no single buffer is ever the
  whole answer again.
- Links (`path`, `next_page_url`, `prev_page_url`) are built from CONTACTBASE_PUBLIC_URL
  when it is set, never from the request's Host header.
"""

from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import StreamingResponse

from contactbase.contacts import reads
from contactbase.contacts.custom_fields import to_wire
from contactbase.contacts.pagination import Cursor

BATCH = 200  # contacts read at a time, at most
# With custom fields or every email, a contact's JSON can reach a few hundred KB: the first
# batch is small, and each next one sized to what the budget has left, so that rows the page
# cannot hold are not read (each is decoded whole, in memory, before the page can look at it).
FIRST_LARGE_BATCH = 16
CHUNK = 1024 * 1024  # the largest body message sent
LARGE_ITEM = 64 * 1024


@dataclass(frozen=True)
class Shape:
    """What each listed contact carries besides its primary values."""

    all_emails: bool = False
    comet_tokens: bool = False
    custom_fields: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Page:
    """A page's contacts as JSON, newest first, their ids, and whether more lie beyond it in
    the direction it was read."""

    items: list[bytes]
    ids: list[int]
    has_more: bool


def render(row: reads.ListedRow, emails: list[str] | None, shape: Shape) -> bytes:
    """A contact as the list shows it (ContactSummary's fields, in its order)."""
    item: dict[str, Any] = {
        "id": row.id,
        "email": row.email,
        "name": row.name,
        "phone": row.phone,
        "location": row.location,
    }
    if shape.all_emails:
        item["emails"] = emails or []
    if shape.comet_tokens:
        item["comet_tokens"] = []
    if row.slots is not None:
        shown = to_wire(row.slots, every_slot=True)
        item["custom_fields"] = {shape.labels.get(slot, slot): v for slot, v in shown.items()}
    return orjson.dumps(item)


async def collect(
    session: AsyncSession,
    space_id: int,
    filters: reads.ListFilters,
    cursor: Cursor | None,
    per_page: int,
    shape: Shape,
    budget: int,
) -> Page:
    """Read the page: batches from the cursor outwards, until it is full or the next contact
    would pass `budget` bytes of JSON."""
    backwards = cursor is not None and not cursor.forward
    large = shape.custom_fields or shape.all_emails
    items: list[bytes] = []
    ids: list[int] = []
    size = 0
    position = cursor
    while True:
        want = min(per_page - len(items), BATCH)
        if large:
            fits = (budget - size) * len(items) // size + 1 if items else FIRST_LARGE_BATCH
            want = max(1, min(want, fits))
        rows, more = await reads.list_contacts(
            session,
            space_id,
            filters,
            position,
            want,
            with_custom_fields=shape.custom_fields,
        )
        emails = (
            await reads.all_emails(session, space_id, [row.id for row in rows])
            if shape.all_emails
            else {}
        )
        # Nearest to the cursor first: the order the budget is spent in.
        for row in reversed(rows) if backwards else rows:
            rendered = render(row, emails.get(row.id), shape)
            if len(rendered) > LARGE_ITEM:  # orjson's buffer is larger than its text: trim it
                rendered = bytes(bytearray(rendered))
            if items and size + len(rendered) > budget:  # `size` counts the commas
                return _page(items, ids, backwards, has_more=True)
            items.append(rendered)
            ids.append(row.id)
            size += len(rendered) + 1
        if not more or len(items) >= per_page or not rows:
            return _page(items, ids, backwards, has_more=more)
        edge = rows[0] if backwards else rows[-1]
        position = Cursor(edge.id, forward=not backwards)


def _page(items: list[bytes], ids: list[int], backwards: bool, *, has_more: bool) -> Page:
    if backwards:  # read oldest first: shown newest first
        items.reverse()
        ids.reverse()
    return Page(items, ids, has_more)


def base_url(request: Request, public_url: str | None) -> str:
    """The service's address as clients should use it: CONTACTBASE_PUBLIC_URL, else the
    request's own (Host and scheme as received; `serve` warns at start when that is unsafe)."""
    if public_url:
        return public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def link(path: str, request: Request, token: str | None) -> str | None:
    """The request's own query with another cursor: the filters kept as they were sent."""
    if token is None:
        return None
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    return f"{path}?{urlencode([*params, ('cursor', token)])}"


def items_budget(
    cap: int, path: str, per_page: int, request: Request, longest: str, *, first: bool
) -> int:
    """The bytes the items of a page may take for the whole answer to stay within `cap`: what
    the envelope takes, with its cursors as long as a cursor can be, is set aside (the first
    page has no previous one)."""
    longest_url = link(path, request, longest)
    previous = (None, None) if first else (longest, longest_url)
    envelope_only = envelope(Page([], [], False), path, per_page, (longest, longest_url, *previous))
    return cap - sum(len(piece) for piece in envelope_only)


def envelope(page: Page, path: str, per_page: int, cursors: Sequence[str | None]) -> list[bytes]:
    """Laravel's cursor envelope around the page's items, as the pieces of its JSON."""
    next_cursor, next_url, prev_cursor, prev_url = cursors
    tail = orjson.dumps(
        {
            "path": path,
            "per_page": per_page,
            "next_cursor": next_cursor,
            "next_page_url": next_url,
            "prev_cursor": prev_cursor,
            "prev_page_url": prev_url,
        }
    )
    pieces = [b'{"data":[']
    for n, item in enumerate(page.items):
        pieces.append(b"," + item if n else item)
    pieces.append(b"]," + tail[1:])
    return pieces


def chunked(pieces: list[bytes]) -> StreamingResponse:
    """The pieces, sent in body messages of at most CHUNK bytes, each piece let go of once it
    is sent (a slow reader holds what is left to send, not the whole page)."""
    length = sum(len(piece) for piece in pieces)
    waiting = deque(pieces)
    pieces.clear()

    async def body() -> AsyncIterator[bytes]:
        run: list[bytes] = []
        held = 0
        while waiting:
            piece = waiting.popleft()
            for start in range(0, len(piece), CHUNK):
                part = piece[start : start + CHUNK] if len(piece) > CHUNK else piece
                if held + len(part) > CHUNK:
                    yield b"".join(run)
                    run, held = [], 0
                run.append(part)
                held += len(part)
            del piece
        if run:
            yield b"".join(run)

    return StreamingResponse(
        body(), media_type="application/json", headers={"content-length": str(length)}
    )

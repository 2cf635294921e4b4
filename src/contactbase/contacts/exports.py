"""Exports: queued in the database, written to gzipped NDJSON by a worker in every server
(contacts/export_worker.py), downloaded through signed links.

The database is the queue: a worker claims a queued export with `FOR UPDATE SKIP LOCKED`
(PostgreSQL) or inside SQLite's single writer, holds it with a lease it renews while
writing, and records the outcome. A Space has at most MAX_PENDING exports queued or running.
An export survives a restart (it is a row); a worker that dies mid-way loses its lease and
another takes the export up; a stale worker cannot overwrite the outcome, because each claim
is numbered.
"""

import hashlib
import hmac
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contactbase.contacts.filters import Condition
from contactbase.contacts.models import Export
from contactbase.db import utcnow
from contactbase.errors import ApiError, NotFound, SpaceInactive
from contactbase.spaces.models import Space
from contactbase.validation import show

LINK_LIFETIME = timedelta(minutes=15)
LEASE = timedelta(seconds=60)
BATCH_SIZE = 2000
# Passes of an export that each met an erasure before it gives up (see ExportWorker._write).
ERASURE_PASSES = 3
MAX_ATTEMPTS = 3
# Exports one Space may have queued or running at once: one tenant cannot fill the queue.
MAX_PENDING = 3
RETRY_AFTER_SECONDS = 10
# Written files are the Space's contacts: readable by the service's user alone.
FILE_MODE, FOLDER_MODE = 0o600, 0o700
DEFAULT_MAX_BYTES = 5 * 2**30  # the folder's budget (CONTACTBASE_EXPORT_MAX_BYTES)


class TooManyExports(ApiError):
    """SPEC 6.8: a Space has MAX_PENDING exports queued or running already."""

    status, code = 429, "too_many_exports"
    summary = "The Space has 3 exports queued or running: wait for one to finish"

    def __init__(self) -> None:
        super().__init__(
            f"This Space already has {MAX_PENDING} exports queued or running; ask again once "
            "one of them has finished.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


async def queue_export(
    session: AsyncSession,
    space_id: int,
    start: datetime,
    end: datetime,
    conditions: Sequence[Condition] = (),
) -> Export:
    """Queue an export of the Space's contacts created in [start, end) (UTC) that meet the
    custom_field_filters `conditions`; 429 when the Space has MAX_PENDING queued or running.
    The Space's row is locked while its exports are counted, so that two requests at once
    cannot both take the last place."""
    await session.execute(select(Space.id).where(Space.id == space_id).with_for_update())
    pending = await session.scalar(
        select(func.count())
        .select_from(Export)
        .where(Export.space_id == space_id, Export.status.in_(("queued", "processing")))
    )
    if (pending or 0) >= MAX_PENDING:
        raise TooManyExports()
    export = Export(
        id=str(uuid.uuid4()),
        space_id=space_id,
        status="queued",
        window_start=start,
        window_end=end,
        created_at=utcnow(),
        attempts=0,
        filters=[condition.model_dump() for condition in conditions] or None,
    )
    session.add(export)
    await session.flush()
    return export


def is_export_id(text: str) -> bool:
    """Export ids are UUIDs as queue_export writes them; anything else names no export."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


async def find_export(session: AsyncSession, space_id: int, export_id: str) -> Export:
    """The Space's export with this id; another Space's is unknown here."""
    export = None
    if is_export_id(export_id):
        export = await session.scalar(
            select(Export).where(Export.space_id == space_id, Export.id == export_id)
        )
    if export is None:
        # Echo a plain id as it is; a long or unprintable one quoted and shortened.
        plain = len(export_id) <= 64 and export_id.isprintable()
        raise NotFound(f"No export with id {export_id if plain else show(export_id)}.")
    return export


async def completed_file(session: AsyncSession, export_id: str, directory: Path) -> Path | None:
    """The file of a completed export, if it is still there; 403 when its Space is inactive
    (a link outlives the key that asked for it, not the subscription)."""
    export = await session.get(Export, export_id)
    if export is None or export.status != "completed":
        return None
    status = await session.scalar(select(Space.status).where(Space.id == export.space_id))
    if status != "active":
        raise SpaceInactive()
    path = directory / file_name(export.id, export.attempts)
    return path if path.is_file() else None


def file_name(export_id: str, attempt: int) -> str:
    return f"{export_id}-{attempt}.ndjson.gz"


def sign_download(key: bytes, export_id: str, expires: int) -> str:
    message = f"{export_id}.{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def download_allowed(key: bytes, export_id: str, expires: int, signature: str) -> bool:
    """True when the link was signed by us and has not expired."""
    expected = sign_download(key, export_id, expires).encode()
    sent = signature.encode("utf-8", "replace")  # compare_digest refuses non-ASCII text
    return hmac.compare_digest(expected, sent) and time.time() < expires

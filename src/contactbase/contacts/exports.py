"""Exports: queued in the database, written to gzipped NDJSON by a worker in every server.

The database is the queue: a worker claims the oldest queued export with `FOR UPDATE SKIP
LOCKED` (PostgreSQL) or inside SQLite's single writer, holds it with a lease it renews while
writing, and records the outcome. An export survives a restart (it is a row); a worker that
dies mid-way loses its lease and another takes the export up; a stale worker cannot overwrite
the outcome, because each claim is numbered.
"""

import asyncio
import gzip
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from contactbase.contacts import filter_clauses
from contactbase.contacts.filters import Condition
from contactbase.contacts.models import Contact, Export, Tombstone
from contactbase.contacts.reads import today_in
from contactbase.db import Database, is_unavailable, utcnow
from contactbase.errors import NotFound
from contactbase.spaces.models import Space
from contactbase.validation import show

log = logging.getLogger("contactbase.exports")

LINK_LIFETIME = timedelta(minutes=15)
LEASE = timedelta(seconds=60)
BATCH_SIZE = 2000
# Passes of an export that each met an erasure before it gives up (see ExportWorker._write).
ERASURE_PASSES = 3
MAX_ATTEMPTS = 3


async def queue_export(
    session: AsyncSession,
    space_id: int,
    start: datetime,
    end: datetime,
    conditions: Sequence[Condition] = (),
) -> Export:
    """Queue an export of the Space's contacts created in [start, end) (UTC) that meet the
    custom_field_filters `conditions`."""
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
    """The file of a completed export, if it is still there."""
    export = await session.get(Export, export_id)
    if export is None or export.status != "completed":
        return None
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


@dataclass(frozen=True)
class Claim:
    id: str
    space_id: int
    window_start: datetime
    window_end: datetime
    attempt: int
    filters: list[dict[str, Any]] | None


class ExportWorker:
    """Claims queued exports and writes them, one at a time, outside any request."""

    def __init__(self, db: Database, directory: Path, poll_seconds: float = 1.0) -> None:
        self.db = db
        self.directory = directory
        self.poll_seconds = poll_seconds

    async def run_forever(self) -> None:
        """Poll for work until cancelled; clean up old files every minute."""
        last_cleanup = 0.0
        while True:
            try:
                if time.monotonic() - last_cleanup > 60:
                    last_cleanup = time.monotonic()
                    self.remove_old_files()
                if await self.run_once():
                    continue
            except Exception as exc:  # the loop must outlive any one failure
                if is_unavailable(exc):
                    log.warning("export worker: database unavailable: %r", exc)
                else:
                    log.exception("export worker: unexpected failure")
            await asyncio.sleep(self.poll_seconds)

    async def run_once(self) -> bool:
        """Claim and write one export; False when there was none to do."""
        claim = await self._claim()
        if claim is None:
            return False
        if claim.attempt > MAX_ATTEMPTS:
            await self._finish(claim, failure="The export failed repeatedly; please ask again.")
            return True
        try:
            count = await self._write(claim)
        except Exception as exc:
            if is_unavailable(exc):
                raise  # the lease runs out and the export is taken up again later
            log.exception("export %s failed", claim.id)
            await self._finish(claim, failure="The export could not be written; ask again.")
            return True
        await self._finish(claim, count=count)
        return True

    async def _claim(self) -> Claim | None:
        now = utcnow()
        oldest = (
            select(Export.id)
            .where(
                or_(
                    Export.status == "queued",
                    (Export.status == "processing") & (Export.lease_until < now),
                )
            )
            .order_by(Export.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        async with self.db.writer() as session, session.begin():
            row = (
                await session.execute(
                    update(Export)
                    .where(Export.id == oldest)
                    .values(
                        status="processing", lease_until=now + LEASE, attempts=Export.attempts + 1
                    )
                    .returning(
                        Export.id,
                        Export.space_id,
                        Export.window_start,
                        Export.window_end,
                        Export.attempts,
                        Export.filters,
                    )
                )
            ).one_or_none()
        return Claim(*row) if row is not None else None

    async def _renew(self, claim: Claim) -> bool:
        async with self.db.writer() as session, session.begin():
            result = await session.execute(
                update(Export)
                .where(
                    Export.id == claim.id,
                    Export.attempts == claim.attempt,
                    Export.status == "processing",
                )
                .values(lease_until=utcnow() + LEASE)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _write(self, claim: Claim) -> int:
        """Write the export's file; again when a contact of the Space was erased while it was
        written (SPEC 6.4: an erasure that commits before an export completes is not in its
        file). Each pass reads in batches, each its own snapshot: a contact erased before the
        pass reaches it is not read, one erased after may be; the Space's count of erasures,
        the same at both ends of a pass, says none was. After ERASURE_PASSES passes that each
        met an erasure, the export fails (ask again)."""
        chosen = await self._filters(claim)
        for _pass in range(ERASURE_PASSES):
            erased = await self._erasures(claim.space_id)
            count = await self._write_pass(claim, chosen)
            if await self._erasures(claim.space_id) == erased:
                return count
        raise RuntimeError("contacts of the Space kept being erased while the export was written")

    async def _filters(self, claim: Claim) -> list[ColumnElement[bool]]:
        """The export's custom_field_filters as clauses, in its Space's timezone today."""
        if not claim.filters:
            return []
        async with self.db.reader() as session, session.begin():
            timezone = await session.scalar(
                select(Space.timezone).where(Space.id == claim.space_id)
            )
        zone = timezone or "UTC"
        conditions = [Condition.model_validate(stored) for stored in claim.filters]
        return filter_clauses.where(conditions, zone, today_in(zone))

    async def _erasures(self, space_id: int) -> int:
        async with self.db.reader() as session, session.begin():
            query = select(func.count()).select_from(Tombstone)
            return int(await session.scalar(query.where(Tombstone.space_id == space_id)) or 0)

    async def _write_pass(self, claim: Claim, chosen: list[ColumnElement[bool]]) -> int:
        """Stream the contacts to a gzip file in batches: memory stays flat whatever the size."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / file_name(claim.id, claim.attempt)
        partial = final.with_suffix(".part")
        count, after, renewed = 0, 0, time.monotonic()
        with gzip.open(partial, "wb") as out:
            while True:
                rows = await self._batch(claim, chosen, after)
                if not rows:
                    break
                await asyncio.to_thread(_write_lines, out, rows)
                count += len(rows)
                after = rows[-1].id
                if time.monotonic() - renewed > LEASE.total_seconds() / 3:
                    renewed = time.monotonic()
                    if not await self._renew(claim):
                        raise RuntimeError("lost the lease")
        partial.rename(final)
        return count

    async def _batch(
        self, claim: Claim, chosen: list[ColumnElement[bool]], after: int
    ) -> list[Any]:
        async with self.db.reader() as session, session.begin():
            result = await session.execute(
                select(
                    Contact.id,
                    Contact.email,
                    Contact.name,
                    Contact.phone,
                    Contact.location,
                    Contact.created_at,
                )
                .where(
                    Contact.space_id == claim.space_id,
                    Contact.merged_into_id.is_(None),
                    Contact.created_at >= claim.window_start,
                    Contact.created_at < claim.window_end,
                    Contact.id > after,
                    *chosen,
                )
                .order_by(Contact.id)
                .limit(BATCH_SIZE)
            )
            return list(result.all())

    async def _finish(self, claim: Claim, *, count: int = 0, failure: str | None = None) -> None:
        """Record the outcome, unless another worker has claimed the export since."""
        values: dict[str, Any] = {"lease_until": None}
        if failure is None:
            values |= {"status": "completed", "completed_at": utcnow(), "contacts": count}
        else:
            values |= {"status": "failed", "failure": failure}
        async with self.db.writer() as session, session.begin():
            await session.execute(
                update(Export)
                .where(Export.id == claim.id, Export.attempts == claim.attempt)
                .values(**values)
            )

    def remove_old_files(self) -> None:
        """Delete files whose download links have expired (and leftovers of dead workers)."""
        if not self.directory.is_dir():
            return
        cutoff = time.time() - (LINK_LIFETIME + LEASE).total_seconds()
        for path in self.directory.iterdir():
            if path.name.endswith((".ndjson.gz", ".part")) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)


def _write_lines(out: gzip.GzipFile, rows: list[Any]) -> None:
    out.write(
        b"".join(
            orjson.dumps(
                {
                    "id": row.id,
                    "email": row.email,
                    "name": row.name,
                    "phone": row.phone,
                    "location": row.location,
                    "created_at": row.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
            + b"\n"
            for row in rows
        )
    )

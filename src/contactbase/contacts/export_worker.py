"""The export worker every server runs: claims queued exports (the queue is the database:
contacts/exports.py) and writes each to a gzipped NDJSON file, under a lease it renews.

- Spaces take turns: the next export is of the active Space served longest ago (an inactive
  Space's exports wait), so that one tenant's queue never holds up another's.
- The file is written readable by the service's user alone, in a folder only that user can
  open, and the folder keeps to its budget (CONTACTBASE_EXPORT_MAX_BYTES): expired files are
  removed first, then an export that would pass it fails with a message saying so.
"""

import asyncio
import gzip
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import aliased

from contactbase.contacts import filter_clauses
from contactbase.contacts.exports import (
    BATCH_SIZE,
    DEFAULT_MAX_BYTES,
    ERASURE_PASSES,
    FILE_MODE,
    FOLDER_MODE,
    LEASE,
    LINK_LIFETIME,
    MAX_ATTEMPTS,
    file_name,
)
from contactbase.contacts.filters import Condition
from contactbase.contacts.models import Contact, Export, Tombstone
from contactbase.contacts.reads import today_in
from contactbase.db import Database, is_unavailable, utcnow
from contactbase.logs import Failures
from contactbase.spaces.models import Space

log = logging.getLogger("contactbase.exports")


class FolderFull(Exception):
    """The export would take the folder past CONTACTBASE_EXPORT_MAX_BYTES."""

    def __init__(self, budget: int) -> None:
        super().__init__(
            f"The export was stopped: it would take the exports folder past its "
            f"{budget / 2**30:g} GiB (CONTACTBASE_EXPORT_MAX_BYTES). Ask again later, when "
            "older exports have expired, or for a shorter window."
        )


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

    def __init__(
        self,
        db: Database,
        directory: Path,
        poll_seconds: float = 1.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.db = db
        self.directory = directory
        self.poll_seconds = poll_seconds
        self.max_bytes = max_bytes

    async def run_forever(self) -> None:
        """Poll for work until cancelled; clean up old files every minute. A failure is logged
        once, not at every poll, until it changes or the worker recovers."""
        last_cleanup = 0.0
        failures = Failures(log, "export worker")
        while True:
            try:
                if time.monotonic() - last_cleanup > 60:
                    last_cleanup = time.monotonic()
                    self.remove_old_files()
                worked = await self.run_once()
                failures.recovered()
                if worked:
                    continue
            except Exception as exc:  # the loop must outlive any one failure
                failures.failed(exc)
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
        except FolderFull as full:
            await self._finish(claim, failure=str(full))
            return True
        except Exception as exc:
            if is_unavailable(exc):
                raise  # the lease runs out and the export is taken up again later
            log.exception("export %s failed", claim.id)
            await self._finish(claim, failure="The export could not be written; ask again.")
            return True
        await self._finish(claim, count=count)
        return True

    async def _claim(self) -> Claim | None:
        """The next export to write: of an active Space (an inactive Space's wait), of the
        Space served longest ago (Spaces take turns, whatever each has queued), its oldest."""
        now = utcnow()
        served = aliased(Export)
        last_served = (
            select(func.max(served.claimed_at))
            .where(served.space_id == Export.space_id)
            .correlate(Export)
            .scalar_subquery()
        )
        oldest = (
            select(Export.id)
            .join(Space, Space.id == Export.space_id)
            .where(
                Space.status == "active",
                or_(
                    Export.status == "queued",
                    (Export.status == "processing") & (Export.lease_until < now),
                ),
            )
            .order_by(last_served.asc().nulls_first(), Export.created_at)
            .limit(1)
            .with_for_update(skip_locked=True, of=Export)
            .scalar_subquery()
        )
        async with self.db.writer() as session, session.begin():
            row = (
                await session.execute(
                    update(Export)
                    .where(Export.id == oldest)
                    .values(
                        status="processing",
                        lease_until=now + LEASE,
                        attempts=Export.attempts + 1,
                        claimed_at=now,
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
        """Stream the contacts to a gzip file in batches: memory stays flat whatever the size.
        The file is made readable by the service's user alone from the start, and the folder's
        budget is kept: expired files go first, then an export that would pass it fails."""
        self.directory.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        self.directory.chmod(FOLDER_MODE)
        self.remove_old_files()
        final = self.directory / file_name(claim.id, claim.attempt)
        partial = final.with_suffix(".part")
        used = self.folder_bytes()
        count, after, renewed = 0, 0, time.monotonic()
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as out:
                while True:
                    rows = await self._batch(claim, chosen, after)
                    if not rows:
                        break
                    await asyncio.to_thread(_write_lines, out, rows)
                    if used + raw.tell() > self.max_bytes:
                        raise FolderFull(self.max_bytes)
                    count += len(rows)
                    after = rows[-1].id
                    if time.monotonic() - renewed > LEASE.total_seconds() / 3:
                        renewed = time.monotonic()
                        if not await self._renew(claim):
                            raise RuntimeError("lost the lease")
            # Checked as it grows (what the compressor has let out), and whole once closed.
            if used + partial.stat().st_size > self.max_bytes:
                raise FolderFull(self.max_bytes)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.rename(final)
        return count

    def folder_bytes(self) -> int:
        """What the exports folder holds now, in bytes."""
        return sum(path.stat().st_size for path in self.directory.iterdir() if path.is_file())

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

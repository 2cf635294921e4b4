"""Running an import of a file of contacts into a Space: `contactbase import` (SPEC 6.3,
docs/import.md). Reading the file, as rows and FILE.rejects, is import_files.py.

Rows are validated as the body of `POST /contacts` is (batch_schemas.read_item: the same messages)
and written in batches of up to `batch_size` rows by `writes.upsert_batch`, the batch
endpoint's write path. Each batch's progress is written by its `then`, in the batch's own
transaction: the offset just after its last line, the sha256 of the file's bytes before that
offset, the last line's number and the running counts. Progress and contacts are committed
together or not at all, so an import killed at any moment has committed whole batches, and
its progress row says which.

`--resume` continues at the committed offset when the bytes before it still hash to the
committed sha256 (lines appended since are read), and refuses a file that changed. Rejected
rows go to FILE.rejects as they are read, synced before their batch commits; a resumed run
first cuts that file back to the rows of committed lines, so each rejected line is listed once.
"""

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import bindparam, delete, text
from sqlalchemy.dialects import postgresql, sqlite

from contactbase.contacts.batch_schemas import read_item
from contactbase.contacts.import_files import (
    SKIP_CHUNK,
    UNLIMITED,
    Lines,
    Rejects,
    Row,
    Source,
    csv_rows,
    ndjson_rows,
)
from contactbase.contacts.merging import Incoming
from contactbase.contacts.models import ImportProgress
from contactbase.contacts.schemas import ContactCreate
from contactbase.contacts.writes import Outcome, incoming, upsert_batch
from contactbase.db import DRIVER_ERRORS, Database, Lease, is_unavailable, transaction, utcnow
from contactbase.errors import ApiError, ServiceUnavailable
from contactbase.prepared import Connection, Prepared, no_rows
from contactbase.spaces import service


class FileChanged(ApiError):
    status, code, summary = 409, "file_changed", "The file changed since its last import"


def _upsert_progress(insert: Any) -> Any:
    table = ImportProgress.__table__
    # In an INSERT, a parameter may not bear a column's name: each is `new_<column>`.
    statement = insert(table).values(
        {column.name: bindparam(f"new_{column.name}", type_=column.type) for column in table.c}
    )
    keys = [table.c.space_id, table.c.path]
    kept = {
        column.name: statement.excluded[column.name] for column in table.c if column not in keys
    }
    return statement.on_conflict_do_update(index_elements=keys, set_=kept)


STORE_PROGRESS = Prepared(
    _upsert_progress(postgresql.insert), no_rows, sqlite=_upsert_progress(sqlite.insert)
)


@dataclass
class Counts:
    """Where an import stands: the counts of the whole file so far (a resumed run's include
    the committed ones of earlier runs), the last line read and the offset after it."""

    created: int = 0
    merged: int = 0
    failed: int = 0
    valid: int = 0  # --dry-run: rows that validated
    lines: int = 0
    offset: int = 0
    started: tuple[int, int] = (0, 0)  # offset and line where this run began
    committed: int = 0  # the last line the progress row records as committed

    def summary(self, *, dry_run: bool) -> dict[str, int]:
        shown = {"created": self.created, "merged": self.merged, "failed": self.failed}
        if dry_run:
            shown["valid"] = self.valid
        return shown | {"lines": self.lines}


Report = Callable[[Counts], None]


async def import_file(
    db: Database,
    space_id: int,
    source: Source,
    *,
    resume: bool = False,
    dry_run: bool = False,
    batch_size: int = 1000,
    max_line_bytes: int = UNLIMITED,
    report: Report = lambda counts: None,
) -> Counts:
    """Import `source` into the Space, in batches committed with their progress; the counts
    once the file is read to the end. The Space must exist; with `resume`, the import goes on
    after the committed lines of an earlier run on the same file, if the file still begins
    with the bytes they were read from."""
    counts = Counts()
    key = (space_id, str(source.path))
    async with _database(counts), transaction(db, write=False) as session:
        await service.get_space(session, space_id)
        progress = await session.get(ImportProgress, key)
    if progress is not None and not resume and not dry_run:
        # Starting over: a run stopped before its first commit must not leave the earlier
        # run's progress for --resume to continue from (its rejected rows are gone too).
        async with _database(counts), transaction(db, write=True) as session:
            await session.execute(delete(ImportProgress).filter_by(space_id=key[0], path=key[1]))
    rejects = Rejects(source.rejects_path, source.header)
    with source.path.open("rb") as stream:
        if resume and progress is not None:
            digest = _resumed(stream, source, progress, counts)
            rejects.keep_through(counts.lines)
        else:
            counts.offset, counts.lines = source.body_start
            digest = _hashed(stream, counts.offset)
            rejects.start_afresh()
        counts.started = (counts.offset, counts.lines)
        lines = Lines(
            stream, digest, offset=counts.offset, number=counts.lines, max_bytes=max_line_bytes
        )
        rows = ndjson_rows(lines) if source.format == "ndjson" else csv_rows(lines, source.columns)
        batch = _Batch(db, space_id, source, lines, rejects, counts, dry_run=dry_run)
        try:
            for row in rows:
                batch.add(row)
                if batch.rows == batch_size:
                    await batch.commit()
                    report(counts)
            if batch.rows or lines.offset > counts.offset:
                await batch.commit()  # the last rows, or the blank lines after them
        finally:
            rejects.close()
    if not dry_run and not db.is_sqlite and counts.created:
        await _refresh_statistics(db, counts)
    report(counts)
    return counts


async def _refresh_statistics(db: Database, counts: Counts) -> None:
    """PostgreSQL plans from its statistics of the tables; after a large import they are far
    from the truth until autovacuum's next ANALYZE (never, where it is off), and a list with
    filters can then take a plan that reads the whole Space (docs/performance.md)."""
    async with _database(counts), transaction(db, write=True) as session:
        await session.execute(text(f"ANALYZE {', '.join(ANALYZED)}"))


ANALYZED = ("contacts", "contact_emails", "contact_phones", "contact_names", "contact_locations")


def _hashed(stream: BinaryIO, end: int) -> "hashlib._Hash":
    """The sha256 of the file's bytes before `end`, read in chunks, the stream left at `end`
    (or at the file's end, when it is shorter)."""
    digest = hashlib.sha256()
    stream.seek(0)
    left = end
    while left > 0:
        chunk = stream.read(min(left, SKIP_CHUNK))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return digest


def _resumed(
    stream: BinaryIO, source: Source, progress: ImportProgress, counts: Counts
) -> "hashlib._Hash":
    """The digest of the committed bytes, checked against the progress row, `counts` set to
    the committed ones and the stream just after them."""
    end = progress.committed_bytes
    digest = _hashed(stream, end)
    if stream.tell() != end or digest.hexdigest() != progress.prefix_sha256:
        raise FileChanged(
            f"{source.path} changed since its import committed {progress.lines} lines: its "
            f"first {end} bytes are not those imported. Import it without --resume to read "
            "it from the start."
        )
    counts.created, counts.merged, counts.failed = (
        progress.created,
        progress.merged,
        progress.failed,
    )
    counts.offset, counts.lines = end, progress.lines
    counts.committed = progress.lines
    stream.seek(end - 1 if end else 0)
    if end and stream.read(1) != b"\n":
        # The last committed line had no line break (the file's end, then); text appended
        # since must begin with one, or that line was changed.
        ending = stream.read(2)
        tail = b"\n" if ending.startswith(b"\n") else b"\r\n" if ending == b"\r\n" else b""
        if ending and not tail:
            raise FileChanged(
                f"{source.path} changed since its import: text was added to line "
                f"{progress.lines}, which was already imported. Import it without --resume."
            )
        digest.update(tail)
        counts.offset += len(tail)
        stream.seek(counts.offset)
    return digest


class _Batch:
    """The rows read since the last commit: the valid ones as items to write, the rejected
    ones written to the rejects file already and counted."""

    def __init__(
        self,
        db: Database,
        space_id: int,
        source: Source,
        lines: Lines,
        rejects: Rejects,
        counts: Counts,
        *,
        dry_run: bool,
    ) -> None:
        self.db, self.space_id, self.source, self.lines = db, space_id, source, lines
        self.rejects, self.counts, self.dry_run = rejects, counts, dry_run
        self.rows = 0
        self.items: list[Incoming] = []
        self.item_lines: list[int] = []
        self.item_cells: list[list[str]] = []  # for FILE.rejects, if the write refuses one
        self.failed = 0

    def add(self, row: Row) -> None:
        self.rows += 1
        parsed = read_item(row.body) if row.problem is None else None
        if isinstance(parsed, ContactCreate):
            self.items.append(incoming(parsed))
            self.item_lines.append(row.line)
            self.item_cells.append(row.cells)
            return
        self.failed += 1
        self.rejects.add(row.line, row.problem or (parsed.message if parsed else ""), row.cells)

    async def commit(self) -> None:
        """Write the items and the progress up to the last line read, in one transaction."""
        counts, lines = self.counts, self.lines
        if self.dry_run:
            counts.valid += len(self.items)
            counts.failed += self.failed
        else:
            self.rejects.sync()
            prefix = lines.digest.copy().hexdigest()
            failed = self.failed

            async def store(connection: Connection, outcomes: list[Outcome]) -> None:
                created, merged, refused = _tally(outcomes)
                params = {
                    "space_id": self.space_id,
                    "path": str(self.source.path),
                    "prefix_sha256": prefix,
                    "committed_bytes": lines.offset,
                    "lines": lines.number,
                    "created": counts.created + created,
                    "merged": counts.merged + merged,
                    "failed": counts.failed + failed + refused,
                    "updated_at": utcnow(),
                }
                await STORE_PROGRESS.run(connection, {f"new_{k}": v for k, v in params.items()})

            async with _database(counts):
                lease = Lease(self.db)
                try:
                    outcomes = await upsert_batch(lease, self.space_id, self.items, then=store)
                except BaseException as exc:
                    await lease.release(exc)
                    raise
                await lease.release()
            created, merged, refused = _tally(outcomes)
            counts.created += created
            counts.merged += merged
            counts.failed += failed + refused
            counts.committed = lines.number
            written = zip(self.item_lines, self.item_cells, outcomes, strict=True)
            for line, cells, outcome in written:
                if outcome.refusal is not None:  # a contact's collection past its 1,000 values
                    self.rejects.add(line, outcome.refusal.message, cells)
        counts.offset, counts.lines = lines.offset, lines.number
        self.rows, self.failed = 0, 0
        self.items, self.item_lines, self.item_cells = [], [], []


def _tally(outcomes: list[Outcome]) -> tuple[int, int, int]:
    """Created, merged and refused items."""
    created = sum(1 for outcome in outcomes if outcome.status == 201)
    merged = sum(1 for outcome in outcomes if outcome.status == 200)
    return created, merged, len(outcomes) - created - merged


@asynccontextmanager
async def _database(counts: Counts) -> AsyncIterator[None]:
    """Database failures as one ServiceUnavailable that says how far the import got."""
    try:
        yield
    except (*DRIVER_ERRORS, OSError) as exc:
        what = "is unreachable" if is_unavailable(exc) else "refused the import"
        cause = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's
        detail = " ".join(str(cause).split()) or type(cause).__name__
        done = (
            f" Lines up to {counts.committed} are committed: run again with --resume to go on."
            if counts.committed
            else ""
        )
        raise ServiceUnavailable(f"The database {what} ({detail}).{done}") from None

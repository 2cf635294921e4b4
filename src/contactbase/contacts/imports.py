"""Importing a file of contacts into a Space: `contactbase import` (SPEC 6.3, docs/import.md).

The file is read as bytes, one line (up to and including its `\\n`) at a time, so that every
position is a byte offset, and each line is decoded as UTF-8 on its own (a BOM at the start of
the file is skipped): a line that is not UTF-8 makes its row a rejected one (`encoding`), and
the others go on. A CSV record may span lines (a quoted cell with line breaks): the lines are
fed to `csv.reader`, which takes them one at a time as it needs them, so the lines it has taken
when a record is complete are that record's, and the record's number is its first line's.

Rows are validated as the body of `POST /contacts` is (schemas.read_item: the same messages)
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

import csv
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from pydantic_core import from_json
from sqlalchemy import bindparam, delete
from sqlalchemy.dialects import postgresql, sqlite

from contactbase.contacts.custom_fields import NUMBER_SLOTS, SLOTS
from contactbase.contacts.merging import KINDS, Incoming
from contactbase.contacts.models import ImportProgress
from contactbase.contacts.schemas import ContactCreate, read_item
from contactbase.contacts.writes import Outcome, incoming, upsert_batch
from contactbase.db import DRIVER_ERRORS, Database, Lease, is_unavailable, transaction, utcnow
from contactbase.errors import ApiError, InvalidInput, NotFound, ServiceUnavailable
from contactbase.prepared import Connection, Prepared, no_rows
from contactbase.spaces import service
from contactbase.validation import show

FORMATS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}
BOM = b"\xef\xbb\xbf"
ENCODING = "encoding"  # the reason given for a line that is not UTF-8
SINGULAR = {"email": "emails", "phone": "phones", "name": "names", "location": "locations"}
COLUMNS = (*SINGULAR, *KINDS, *SLOTS)
NUMBER_COLUMNS = {f"profile_field_{n}" for n in NUMBER_SLOTS}
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# A line of the rejects file is as long as the row it lists: no limit of its own.
UNLIMITED = 1 << 62
SKIP_CHUNK = 1 << 16


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


class Lines:
    """The lines of a binary file from a byte offset, as text: each decoded on its own (one
    that is not UTF-8 with its bytes escaped as surrogates, and `problem` set), one longer than
    `max_bytes` skipped (read as a blank line, `problem` set). Keeps the offset just after the
    last line read, that line's number and the sha256 of every byte read (`digest`)."""

    def __init__(
        self,
        stream: BinaryIO,
        digest: "hashlib._Hash",
        *,
        offset: int = 0,
        number: int = 0,
        max_bytes: int = UNLIMITED,
    ) -> None:
        self.stream, self.digest, self.max_bytes = stream, digest, max_bytes
        self.offset, self.number = offset, number
        self.problem: str | None = None  # of a line read since `begin`

    def begin(self) -> int:
        """Start a record: its problems are counted from here; the number of its first line."""
        self.problem = None
        return self.number + 1

    def __iter__(self) -> "Lines":
        return self

    def __next__(self) -> str:
        raw = self.stream.readline(self.max_bytes + 1)
        if not raw:
            raise StopIteration
        at_start = self.offset == 0
        self._consume(raw)
        self.number += 1
        if len(raw) > self.max_bytes:
            while raw and not raw.endswith(b"\n"):  # the rest of the line, never held whole
                raw = self.stream.readline(SKIP_CHUNK)
                self._consume(raw)
            self.problem = self.problem or f"The line is longer than {self.max_bytes} bytes."
            return "\n"
        if at_start and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        try:
            return raw.decode()
        except UnicodeDecodeError:
            self.problem = self.problem or ENCODING
            return raw.decode(errors="surrogateescape")

    def _consume(self, raw: bytes) -> None:
        self.digest.update(raw)
        self.offset += len(raw)


def printable(text: str) -> str:
    """Text read from a line that is not UTF-8, its stray bytes shown as `\\xff`."""
    return text.encode(errors="surrogateescape").decode(errors="backslashreplace")


class Row(NamedTuple):
    line: int  # the number of its first line
    cells: list[str]  # as the rejects file lists it: the CSV cells, or the NDJSON line
    body: Any  # the create body to validate; None when `problem` rejects the row already
    problem: str | None = None


def csv_records(lines: Lines) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """Each CSV record: its first line's number, its cells (None when it cannot be parsed)
    and the problem of its lines (or of its syntax)."""
    reader = csv.reader(lines)
    while True:
        first = lines.begin()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield first, None, f"The CSV record cannot be read ({exc})."
            continue
        yield first, cells, lines.problem


def csv_rows(lines: Lines, columns: list[str]) -> Iterator[Row]:
    """The rows of a CSV file after its header; blank ones (every cell empty) skipped."""
    for first, cells, problem in csv_records(lines):
        if cells is None or problem is not None:
            yield Row(first, [printable(cell) for cell in cells or ()], None, problem)
        elif not any(cell.strip() for cell in cells):
            continue
        elif len(cells) > len(columns):
            reason = f"The row has {len(cells)} cells; the header names {len(columns)} columns."
            yield Row(first, cells, None, reason)
        else:
            yield Row(first, cells, csv_body(columns, cells))


def csv_body(columns: list[str], cells: list[str]) -> dict[str, Any]:
    """A CSV row as the body of `POST /contacts`: for each collection the singular column's
    cell first, then the plural column's values (split on `|`); empty cells and values left
    out; number slots' cells as JSON numbers."""
    firsts: dict[str, list[str]] = {kind: [] for kind in KINDS}
    rest: dict[str, list[str]] = {kind: [] for kind in KINDS}
    slots: dict[str, Any] = {}
    for column, cell in zip(columns, cells, strict=False):  # missing trailing cells are empty
        if not cell.strip():
            continue
        if column in SINGULAR:
            firsts[SINGULAR[column]].append(cell)
        elif column in rest:
            rest[column].extend(value for value in cell.split("|") if value.strip())
        else:
            slots[column] = json_number(cell) if column in NUMBER_COLUMNS else cell
    body: dict[str, Any] = {
        kind: firsts[kind] + rest[kind] for kind in KINDS if firsts[kind] or rest[kind]
    }
    if slots:
        body["custom_fields"] = slots
    return body


def json_number(cell: str) -> Any:
    """The number a cell holds, int or float as JSON gives it; else the cell itself, which
    validation then refuses with the usual message."""
    text = cell.strip()
    if JSON_NUMBER.fullmatch(text):
        try:
            return from_json(text)
        except ValueError:
            pass
    return cell


def ndjson_rows(lines: Lines) -> Iterator[Row]:
    """The rows of an NDJSON file, one JSON value a line; blank lines skipped."""
    while True:
        first = lines.begin()
        text = next(lines, None)
        if text is None:
            return
        shown = text.rstrip("\r\n")
        if lines.problem is not None:
            yield Row(first, [printable(shown)], None, lines.problem)
        elif shown.strip():
            try:
                yield Row(first, [shown], from_json(shown))
            except ValueError as exc:
                yield Row(first, [shown], None, f"The line must be valid JSON ({exc}).")


@dataclass
class Source:
    """A file to import, checked: its format, and for CSV its columns."""

    path: Path  # absolute, symbolic links resolved: the progress row's key
    rejects_path: Path  # FILE.rejects, FILE as given
    format: str
    columns: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)  # as written, for the rejects file
    body_start: tuple[int, int] = (0, 0)  # offset and line number after the header


def open_source(path: Path, max_line_bytes: int) -> Source:
    """The file checked before anything is written: readable, a known format, and for CSV a
    header naming known columns only."""
    absolute = Path(os.path.realpath(path))
    rejects = path.with_name(path.name + ".rejects")
    kind = FORMATS.get(path.suffix.lower())
    try:
        with absolute.open("rb") as stream:
            if kind is None:
                raise _refused(
                    f"{path}: unknown format; the file name must end in .csv, .ndjson or .jsonl."
                )
            if kind == "ndjson":
                return Source(absolute, rejects, kind)
            lines = Lines(stream, hashlib.sha256(), max_bytes=max_line_bytes)
            _first, cells, problem = next(csv_records(lines), (1, None, None))
    except FileNotFoundError:
        raise NotFound(f"No such file: {path}.") from None
    except OSError as exc:
        raise _refused(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if problem is not None or not cells or not any(cell.strip() for cell in cells):
        reason = "it is empty" if lines.offset == 0 else problem or "line 1 is blank"
        reason = "it is not UTF-8" if reason == ENCODING else reason
        raise _refused(f"{path}: the first line must be the header row ({reason}).")
    columns = [cell.strip().lower() for cell in cells]
    for position, column in enumerate(columns, 1):
        if column not in COLUMNS:
            raise _refused(
                f"{path}: unknown column {show(cells[position - 1])} (column {position}) in the "
                "header; the columns are email, emails, phone, phones, name, names, location, "
                "locations and profile_field_1 to profile_field_30."
            )
        if columns.index(column) < position - 1:
            raise _refused(f"{path}: the column {show(column)} appears twice in the header.")
    if "email" not in columns and "emails" not in columns:
        raise _refused(f"{path}: the header has neither an email nor an emails column.")
    return Source(absolute, rejects, kind, columns, cells, (lines.offset, lines.number))


def _refused(message: str) -> InvalidInput:
    return InvalidInput({"file": [message]})


class Rejects:
    """FILE.rejects, a CSV file: `line`, `reason`, then the row's cells (CSV) or its text
    (NDJSON, under `row`). Opened at the first rejected row."""

    def __init__(self, path: Path, header: list[str]) -> None:
        self.path, self.header = path, ["line", "reason", *(header or ["row"])]
        self._file: Any = None
        self._writer: Any = None
        self._unsynced = False

    def start_afresh(self) -> None:
        self.path.unlink(missing_ok=True)

    def keep_through(self, line: int) -> None:
        """Cut the file back to the rows of lines up to `line`, the committed ones: rows of
        later lines were written by a run that stopped before committing them, which will be
        read again."""
        if not self.path.exists():
            return
        with self.path.open("rb") as stream:
            lines = Lines(stream, hashlib.sha256())
            kept = 0
            for number, (_first, cells, _problem) in enumerate(csv_records(lines)):
                if number > 0 and cells and cells[0].isdigit() and int(cells[0]) > line:
                    break
                kept = lines.offset
        os.truncate(self.path, kept)

    def add(self, line: int, reason: str, cells: list[str]) -> None:
        if self._writer is None:
            self._file = self.path.open("a", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file)
            if self._file.tell() == 0:
                self._writer.writerow(self.header)
        self._writer.writerow([line, reason, *cells])
        self._unsynced = True

    def sync(self) -> None:
        """On disk before the batch whose rows they are commits."""
        if self._unsynced:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._unsynced = False

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()


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
    report(counts)
    return counts


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
        self.failed = 0

    def add(self, row: Row) -> None:
        self.rows += 1
        parsed = read_item(row.body) if row.problem is None else None
        if isinstance(parsed, ContactCreate):
            self.items.append(incoming(parsed))
            self.item_lines.append(row.line)
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
            for line, outcome in zip(self.item_lines, outcomes, strict=True):
                if outcome.refusal is not None:  # never with merge on; listed all the same
                    self.rejects.add(line, outcome.refusal.message, [])
        counts.offset, counts.lines = lines.offset, lines.number
        self.rows, self.failed = 0, 0
        self.items, self.item_lines = [], []


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

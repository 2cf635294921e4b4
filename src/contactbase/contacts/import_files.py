"""The files of an import (`contactbase import`, SPEC 6.3, docs/import.md): the file to import
read as rows, and FILE.rejects. Running the import, in batches, is imports.py.

The file is read as bytes, one line (up to and including its `\\n`) at a time, so that every
position is a byte offset, and each line is decoded as UTF-8 on its own (a BOM at the start of
the file is skipped): a line that is not UTF-8 makes its row a rejected one (`encoding`), and
the others go on. A CSV record may span lines (a quoted cell with line breaks): the lines are
fed to `csv.reader`, which takes them one at a time as it needs them, so the lines it has taken
when a record is complete are that record's, and the record's number is its first line's. The
sha256 of the bytes read is kept as they are read: with the offset after a line, it is what the
progress of an import records.

A row becomes the body of `POST /contacts` (a CSV row by the header's columns, an NDJSON line
as it is), or a rejected row with its reason when it cannot be read. Rejected rows go to
FILE.rejects, each with its line number, so that the file can be cut back to the rows of the
lines an import committed (`Rejects.keep_through`).
"""

import csv
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from pydantic_core import from_json

from contactbase.contacts.custom_fields import NUMBER_SLOTS, SLOTS
from contactbase.contacts.merging import KINDS
from contactbase.errors import InvalidInput, NotFound
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

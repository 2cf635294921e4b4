"""`contactbase import`: CSV and NDJSON files written in batches through the batch write path,
rejected rows listed in FILE.rejects, progress committed with each batch, --resume after a
real interruption (kill -9), --dry-run, and one-line errors."""

import asyncio
import csv
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from sqlalchemy import func, select, text
from typer.testing import CliRunner, Result

from contactbase import cli
from contactbase.cli import app
from contactbase.contacts.batch_schemas import MAX_BATCH
from contactbase.contacts.import_files import Rejects, csv_body, json_number
from contactbase.contacts.imports import Counts
from contactbase.contacts.models import VALUE_TABLES, Contact, ImportProgress
from contactbase.db import Database
from contactbase.progress import ImportMeter
from tests.factories import CONTACTS, SEED, add_contact, answered, bearer, make_key, make_space

runner = CliRunner()
CONTACTBASE = str(Path(sys.executable).with_name("contactbase"))


class Importer:
    """The command, in process, on the test database."""

    def __init__(self, database_url: str) -> None:
        self.env: dict[str, str | None] = {
            "CONTACTBASE_DATABASE_URL": database_url,
            "CONTACTBASE_REDIS_URL": None,
        }

    async def __call__(self, *args: str) -> Result:
        """Run in a thread: the command runs its own event loop."""
        return await asyncio.to_thread(runner.invoke, app, ["import", *args], env=self.env)

    async def json(self, *args: str) -> Any:
        result = await self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def importer(database_url: str, db: Database) -> Importer:
    return Importer(database_url)


@pytest.fixture
async def space(db: Database) -> int:
    return await make_space(db)


def error_line(result: Result) -> str:
    """The error a command printed: one line on standard error, however long."""
    assert result.exit_code == 1, result.output
    line, end, rest = result.stderr.partition("\n")
    assert (end, rest) == ("\n", ""), result.stderr
    return line


def has_rejects(path: Path) -> bool:
    return Path(f"{path}.rejects").exists()


def rejects_of(path: Path) -> list[list[str]]:
    with Path(f"{path}.rejects").open(encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


async def read_back(
    client: httpx.AsyncClient, db: Database, space_id: int, email: str
) -> dict[str, Any]:
    """The contact owning `email`, as the API shows it."""
    auth = bearer(await make_key(db, space_id))
    listed = answered(await client.get(CONTACTS, params={"email": email}, headers=auth))
    (summary,) = listed["data"]
    detail: dict[str, Any] = answered(await client.get(f"{CONTACTS}/{summary['id']}", headers=auth))
    return detail


async def counts_of(db: Database) -> dict[str, int]:
    async with db.reader() as session:
        counts = {"contacts": await session.scalar(select(func.count()).select_from(Contact))}
        for kind, table in VALUE_TABLES.items():
            counts[kind] = await session.scalar(select(func.count()).select_from(table))
    return {name: int(count or 0) for name, count in counts.items()}


async def progress_of(db: Database, space_id: int, path: Path) -> ImportProgress | None:
    async with db.reader() as session:
        return await session.get(ImportProgress, (space_id, str(path)))  # tmp_path is real


async def test_a_csv_file_is_imported(
    importer: Importer, client: httpx.AsyncClient, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(
        "email,emails,phone,phones,name,names,location,locations,"
        "profile_field_1,profile_field_17,profile_field_18,profile_field_26\n"
        "john@example.com,johnny@example.com|jd@example.com,+1234567890,+0987654321,"
        'John Doe,Johnny,"New York, NY","Los Angeles, CA",note,42,1.5,2026-11-26\n'
        "ann@example.com,,,,,,,,,,,\n"
    )
    assert await importer.json(str(space), str(path)) == {
        "created": 2,
        "merged": 0,
        "failed": 0,
        "lines": 3,
    }
    john = await read_back(client, db, space, "john@example.com")
    assert {kind: john[kind] for kind in VALUE_TABLES} == {
        "emails": ["john@example.com", "johnny@example.com", "jd@example.com"],
        "phones": ["+1234567890", "+0987654321"],
        "names": ["John Doe", "Johnny"],
        "locations": ["New York, NY", "Los Angeles, CA"],
    }
    assert john["custom_fields"] == {
        "profile_field_1": "note",
        "profile_field_17": 42,
        "profile_field_18": 1.5,
        "profile_field_26": "2026-11-26",
    }
    ann = await read_back(client, db, space, "ann@example.com")
    assert (ann["emails"], ann["phones"], ann["names"]) == (["ann@example.com"], [], [])
    assert "custom_fields" not in ann
    assert not has_rejects(path)
    progress = await progress_of(db, space, path)
    assert progress is not None
    assert (progress.lines, progress.created, progress.merged, progress.failed) == (3, 2, 0, 0)
    assert progress.committed_bytes == path.stat().st_size
    assert progress.prefix_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


async def test_email_comes_before_emails_whatever_the_column_order(
    importer: Importer, client: httpx.AsyncClient, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "order.csv"
    path.write_text(
        "names,emails,Name,Email\n"
        "Second|Third,b@example.com|c@example.com,First,a@example.com\n"
        " | ,d@example.com|,,\n"
    )
    assert await importer.json(str(space), str(path)) == {
        "created": 2,
        "merged": 0,
        "failed": 0,
        "lines": 3,
    }
    first = await read_back(client, db, space, "b@example.com")
    assert first["emails"] == ["a@example.com", "b@example.com", "c@example.com"]
    assert first["names"] == ["First", "Second", "Third"]
    second = await read_back(client, db, space, "d@example.com")
    assert (second["emails"], second["names"]) == (["d@example.com"], [])


async def test_rows_merge_into_each_other_and_into_existing_contacts(
    importer: Importer, client: httpx.AsyncClient, db: Database, space: int, tmp_path: Path
) -> None:
    auth = bearer(await make_key(db, space))
    existing = await add_contact(client, auth, SEED)
    path = tmp_path / "merges.csv"
    path.write_text(
        "emails,names,phones\n"
        "ann@example.com,Ann,\n"
        "JOHN@example.com|john.work@example.com,John Work,\n"
        "bob@example.com,Bob,\n"
        "ann@example.com|annie@example.com,Annie,555 0101\n"
    )
    # One row a batch as well as all in one: the merges do not depend on the batches.
    assert await importer.json(str(space), str(path), "--batch-size", "1") == {
        "created": 2,
        "merged": 2,
        "failed": 0,
        "lines": 5,
    }
    john = await read_back(client, db, space, "john.work@example.com")
    assert john["id"] == existing["id"]
    assert john["emails"] == [*SEED["emails"], "john.work@example.com"]
    assert john["names"] == [*SEED["names"], "John Work"]
    ann = await read_back(client, db, space, "annie@example.com")
    assert (ann["emails"], ann["names"], ann["phones"]) == (
        ["ann@example.com", "annie@example.com"],
        ["Ann", "Annie"],
        ["555 0101"],
    )
    assert (await counts_of(db))["contacts"] == 3
    assert await importer.json(str(space), str(path)) == {
        "created": 0,
        "merged": 4,
        "failed": 0,
        "lines": 5,
    }
    assert (await counts_of(db))["contacts"] == 3


async def test_rejected_rows_are_listed_with_their_line_and_reason(
    importer: Importer, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        b"email,name,profile_field_1,profile_field_16\n"  # 1
        b"ok1@example.com,One,,\n"  # 2
        b"not-an-email,Two,,\n"  # 3
        b'ok3@example.com,Three,"a note\non three\nlines",\n'  # 4-6
        b"ok7@example.com,Seven,,12abc\n"  # 7
        b"\xff\xfe@example.com,Eight,,\n"  # 8
        b"\n"  # 9: blank
        b",,,\n"  # 10: no value at all, as blank
        b"ok11@example.com,,,\n"  # 11
        b"ok12@example.com,Twelve,,,extra\n"  # 12
        b",Thirteen,,\n"  # 13
    )
    assert await importer.json(str(space), str(path)) == {
        "created": 3,
        "merged": 0,
        "failed": 5,
        "lines": 13,
    }
    assert rejects_of(path) == [
        ["line", "reason", "email", "name", "profile_field_1", "profile_field_16"],
        [
            "3",
            'The emails.0 field must be a valid email address ("not-an-email").',
            "not-an-email",
            "Two",
            "",
            "",
        ],
        [
            "7",
            'The custom_fields.profile_field_16 field must be a number ("12abc").',
            "ok7@example.com",
            "Seven",
            "",
            "12abc",
        ],
        ["8", "encoding", "\\xff\\xfe@example.com", "Eight", "", ""],
        [
            "12",
            "The row has 5 cells; the header names 4 columns.",
            "ok12@example.com",
            "Twelve",
            "",
            "",
            "extra",
        ],
        ["13", "The emails field is required.", "", "Thirteen", "", ""],
    ]
    assert (await counts_of(db))["contacts"] == 3


async def test_a_file_with_a_bom_and_crlf_lines(
    importer: Importer, client: httpx.AsyncClient, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(
        b"\xef\xbb\xbfemail,name\r\n"
        b"zoe@example.com,Zo\xc3\xab\r\n"
        b"bad,Bad\r\n"
        b'yan@example.com,"Yan\r\nNot a name"\r\n'
    )
    assert await importer.json(str(space), str(path)) == {
        "created": 1,
        "merged": 0,
        "failed": 2,
        "lines": 5,
    }
    zoe = await read_back(client, db, space, "zoe@example.com")
    assert zoe["names"] == ["Zoë"]
    rejects = rejects_of(path)
    assert [row[0] for row in rejects] == ["line", "3", "4"]
    assert rejects[0] == ["line", "reason", "email", "name"]
    assert rejects[2][2:] == ["yan@example.com", "Yan\r\nNot a name"]


async def test_an_ndjson_file_is_imported(
    importer: Importer, client: httpx.AsyncClient, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "people.ndjson"
    lines = [
        json.dumps({**SEED, "custom_fields": {"profile_field_20": 7}}),
        "",
        "   ",
        json.dumps({"emails": ["ann@example.com"], "names": ["Ann"]}),
        json.dumps({"emails": ["JOHN@example.com"], "names": ["John"]}),
        '{"emails": ["broken@example.com"',
        json.dumps(["ann@example.com"]),
        json.dumps({"emails": ["x@example.com"], "phone": ["+1234567890"]}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"emails": ["\xff@example.com"]}')
    assert await importer.json(str(space), str(path)) == {
        "created": 2,
        "merged": 1,
        "failed": 4,
        "lines": 9,
    }
    john = await read_back(client, db, space, "john@example.com")
    assert john["names"] == [*SEED["names"], "John"]
    assert john["custom_fields"] == {"profile_field_20": 7}
    assert rejects_of(path) == [
        ["line", "reason", "row"],
        [
            "6",
            "The line must be valid JSON (EOF while parsing a list at line 1 column 32).",
            lines[5],
        ],
        ["7", "Each item must be a JSON object.", lines[6]],
        ["8", "The phone field is not allowed.", lines[7]],
        ["9", "encoding", '{"emails": ["\\xff@example.com"]}'],
    ]


async def test_jsonl_is_ndjson(importer: Importer, space: int, tmp_path: Path) -> None:
    path = tmp_path / "people.JSONL"
    path.write_text(json.dumps({"emails": ["a@example.com"]}) + "\n")
    assert await importer.json(str(space), str(path)) == {
        "created": 1,
        "merged": 0,
        "failed": 0,
        "lines": 1,
    }


async def test_a_dry_run_writes_nothing(
    importer: Importer, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "dry.csv"
    path.write_text("email\na@example.com\nnope\nb@example.com\na@example.com\n")
    assert await importer.json(str(space), str(path), "--dry-run") == {
        "created": 0,
        "merged": 0,
        "failed": 1,
        "valid": 3,
        "lines": 5,
    }
    assert [row[0] for row in rejects_of(path)] == ["line", "3"]
    assert (await counts_of(db))["contacts"] == 0
    assert await progress_of(db, space, path) is None
    human = await importer(str(space), str(path), "--dry-run")
    assert human.exit_code == 0
    assert "nothing written" in human.stdout
    refused = await importer(str(space), str(path), "--dry-run", "--resume")
    assert refused.exit_code == 1
    assert "cannot be used together" in error_line(refused)


async def test_resume_reads_the_lines_appended_since(
    importer: Importer, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "growing.csv"
    path.write_text("email\na@example.com\nbad\n")
    assert await importer.json(str(space), str(path), "--resume") == {
        "created": 1,
        "merged": 0,
        "failed": 1,
        "lines": 3,
    }
    with path.open("a") as file:
        file.write("b@example.com\nworse\n")
    # The counts are the file's: the earlier run's committed counts and this run's.
    assert await importer.json(str(space), str(path), "--resume") == {
        "created": 2,
        "merged": 0,
        "failed": 2,
        "lines": 5,
    }
    assert [row[0] for row in rejects_of(path)] == ["line", "3", "5"]
    assert await importer.json(str(space), str(path), "--resume") == {
        "created": 2,
        "merged": 0,
        "failed": 2,
        "lines": 5,
    }
    assert (await counts_of(db))["contacts"] == 2
    # Without --resume the file is read from the start again; the rejects file is rewritten.
    assert await importer.json(str(space), str(path)) == {
        "created": 0,
        "merged": 2,
        "failed": 2,
        "lines": 5,
    }
    assert [row[0] for row in rejects_of(path)] == ["line", "3", "5"]


async def test_resume_after_a_last_line_without_a_line_break(
    importer: Importer, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "unterminated.ndjson"
    path.write_text('{"emails": ["a@example.com"]}')
    assert (await importer.json(str(space), str(path), "--resume"))["lines"] == 1
    with path.open("a") as file:
        file.write('\n{"emails": ["b@example.com"]}\n')
    assert await importer.json(str(space), str(path), "--resume") == {
        "created": 2,
        "merged": 0,
        "failed": 0,
        "lines": 2,
    }
    with path.open("a") as file:
        file.write('{"emails": ["c@example.com"]}')
    assert (await importer.json(str(space), str(path), "--resume"))["created"] == 3
    with path.open("a") as file:
        file.write('{"emails": ["d@example.com"]}\n')  # line 3 changed
    changed = await importer(str(space), str(path), "--resume")
    assert changed.exit_code == 1
    assert "text was added to line 3" in error_line(changed)


async def test_resume_refuses_a_changed_file(
    importer: Importer, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "changed.csv"
    path.write_text("email\na@example.com\nb@example.com\n")
    assert (await importer.json(str(space), str(path)))["created"] == 2
    path.write_text("email\na@example.com\nB@example.com\nc@example.com\n")
    result = await importer(str(space), str(path), "--resume")
    assert result.exit_code == 1
    message = error_line(result)
    assert message.startswith("error: ")
    assert "changed since its import committed 3 lines" in message
    assert "Traceback" not in result.output
    as_json = await importer(str(space), str(path), "--resume", "--json")
    assert as_json.stdout == ""  # SPEC 6.9: with --json too, the error is one line on stderr
    assert error_line(as_json) == message
    path.write_text("email\na@example.com\n")  # shorter than what was committed
    assert (await importer(str(space), str(path), "--resume")).exit_code == 1
    assert (await counts_of(db))["contacts"] == 2


async def test_resume_after_kill_imports_every_line_once(
    database_url: str, importer: Importer, db: Database, space: int, tmp_path: Path
) -> None:
    """A real interruption: the command, a child process, killed with SIGKILL once it has
    committed a batch; then --resume."""
    rows = 4000
    path = tmp_path / "big.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["emails", "names"])
        for n in range(rows):
            email = f"bad{n}" if n % 7 == 3 else f"p{n}@example.com|p{n}.b@example.com"
            writer.writerow([email, f"Person {n}"])
    bad = [n for n in range(rows) if n % 7 == 3]
    env = {**os.environ, "CONTACTBASE_DATABASE_URL": database_url}
    env.pop("CONTACTBASE_REDIS_URL", None)
    child = await asyncio.create_subprocess_exec(
        *[CONTACTBASE, "import", str(space), str(path), "--batch-size", "5"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(3000):
            progress = await progress_of(db, space, path)
            if progress is not None or child.returncode is not None:
                break
            await asyncio.sleep(0.01)
        child.kill()
    finally:
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    interrupted = await progress_of(db, space, path)
    assert interrupted is not None
    assert 1 < interrupted.lines < rows + 1, interrupted.lines
    before = await counts_of(db)
    assert before["contacts"] == interrupted.created
    assert await importer.json(str(space), str(path), "--resume") == {
        "created": rows - len(bad),
        "merged": 0,  # a row written twice would be merged the second time
        "failed": len(bad),
        "lines": rows + 1,
    }
    after = await counts_of(db)
    assert (after["contacts"], after["emails"], after["names"]) == (
        rows - len(bad),
        2 * (rows - len(bad)),
        rows - len(bad),
    )
    done = await progress_of(db, space, path)
    assert done is not None
    assert (done.lines, done.committed_bytes) == (rows + 1, path.stat().st_size)
    listed = rejects_of(path)
    assert [int(row[0]) for row in listed[1:]] == [n + 2 for n in bad]


async def test_batches_commit_their_progress(
    importer: Importer, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "batches.ndjson"
    body = "".join(json.dumps({"emails": [f"p{n}@example.com"]}) + "\n" for n in range(7))
    path.write_text(body + "\n\n")
    assert await importer.json(str(space), str(path), "--batch-size", "3") == {
        "created": 7,
        "merged": 0,
        "failed": 0,
        "lines": 9,
    }
    progress = await progress_of(db, space, path)
    assert progress is not None
    assert (progress.lines, progress.committed_bytes) == (9, len(body) + 2)
    assert progress.prefix_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_line_longer_than_the_body_limit_is_rejected(
    importer: Importer, space: int, tmp_path: Path
) -> None:
    importer.env["CONTACTBASE_MAX_BODY_BYTES"] = "100"
    path = tmp_path / "long.ndjson"
    long_line = json.dumps({"emails": ["a@example.com"], "names": ["x" * 200]})
    path.write_text(long_line + "\n" + json.dumps({"emails": ["b@example.com"]}) + "\n")
    assert await importer.json(str(space), str(path)) == {
        "created": 1,
        "merged": 0,
        "failed": 1,
        "lines": 2,
    }
    assert rejects_of(path)[1] == ["1", "The line is longer than 100 bytes.", ""]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("email,phone_number\n", 'unknown column "phone_number" (column 2)'),
        ("email,name,Name\n", 'the column "name" appears twice'),
        ("name,phones\n", "neither an email nor an emails column"),
        ("", "the first line must be the header row (it is empty)"),
    ],
)
async def test_a_bad_header_is_refused_before_anything_is_written(
    importer: Importer, db: Database, space: int, tmp_path: Path, header: str, message: str
) -> None:
    path = tmp_path / "header.csv"
    path.write_text(header + ("a@example.com,x\n" if header else ""))
    result = await importer(str(space), str(path))
    assert result.exit_code == 1
    assert message in error_line(result)
    assert not has_rejects(path)
    assert (await counts_of(db))["contacts"] == 0
    assert await progress_of(db, space, path) is None


async def test_one_line_errors(importer: Importer, space: int, tmp_path: Path) -> None:
    missing = await importer(str(space), str(tmp_path / "missing.csv"))
    assert missing.exit_code == 1
    assert error_line(missing) == f"error: No such file: {tmp_path}/missing.csv."
    path = tmp_path / "people.csv"
    path.write_text("email\na@example.com\n")
    unknown = await importer("999", str(path))
    assert unknown.exit_code == 1
    assert error_line(unknown) == "error: No Space with id 999."
    unknown_json = await importer("999", str(path), "--json")
    assert unknown_json.stdout == ""  # SPEC 6.9: with --json too, the error is one line on stderr
    assert error_line(unknown_json) == "error: No Space with id 999."
    assert not has_rejects(path)
    other = tmp_path / "people.txt"
    other.write_text("a@example.com\n")
    unknown_format = await importer(str(space), str(other))
    assert unknown_format.exit_code == 1
    assert "unknown format" in error_line(unknown_format)
    directory = await importer(str(space), str(tmp_path))
    assert directory.exit_code == 1
    assert "cannot be read" in error_line(directory)
    for result in (missing, unknown, unknown_format, directory):
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output


async def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("email\na@example.com\n")
    importer = Importer("postgresql://nobody@127.0.0.1:1/nothing")
    result = await importer("1", str(path))
    assert result.exit_code == 1
    assert error_line(result).startswith("error: The database is unreachable (")


async def test_the_human_summary(importer: Importer, space: int, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("email\na@example.com\nbad\n")
    result = await importer(str(space), str(path))
    assert result.exit_code == 0
    assert result.stdout == (
        f"Imported {path} into Space {space}: 3 lines, 1 contacts created, 0 merged, "
        f"1 rows rejected (listed in {path}.rejects).\n"
    )


def test_a_csv_row_becomes_a_create_body() -> None:
    columns = ["emails", "email", "phones", "profile_field_16", "profile_field_2", "locations"]
    cells = ["b@x.com| c@x.com |", "a@x.com", " ", "-1.5e3", "007", "Paris|"]
    assert csv_body(columns, cells) == {
        "emails": ["a@x.com", "b@x.com", " c@x.com "],
        "locations": ["Paris"],
        "custom_fields": {"profile_field_16": -1500.0, "profile_field_2": "007"},
    }
    assert csv_body(columns, ["x@x.com"]) == {"emails": ["x@x.com"]}


@pytest.mark.parametrize(
    ("cell", "value"),
    [("42", 42), (" 7 ", 7), ("1.25", 1.25), ("-0", 0), ("1e2", 100.0), ("+1", "+1"),
     ("1,5", "1,5"), ("NaN", "NaN"), ("0x10", "0x10"), ("", "")],
)  # fmt: skip
def test_a_number_cell_is_read_as_json_reads_it(cell: str, value: Any) -> None:
    assert json_number(cell) == value
    assert type(json_number(cell)) is type(value)


async def test_a_batch_of_rejected_rows_only_commits_its_progress(
    importer: Importer, db: Database, space: int, tmp_path: Path
) -> None:
    path = tmp_path / "all-bad.csv"
    path.write_text("email\nbad\nworse\n")
    assert await importer.json(str(space), str(path), "--batch-size", "1") == {
        "created": 0,
        "merged": 0,
        "failed": 2,
        "lines": 3,
    }
    progress = await progress_of(db, space, path)
    assert progress is not None
    assert (progress.lines, progress.failed) == (3, 2)


def test_the_rejects_of_uncommitted_lines_are_cut_before_a_resumed_run(tmp_path: Path) -> None:
    """Rows a killed run listed after its last commit are read again by the resumed run: they
    are cut from FILE.rejects first, so that each is listed once."""
    rejects = Rejects(tmp_path / "people.csv.rejects", ["email", "note"])
    rejects.add(3, "bad", ["x", "two\nlines"])
    rejects.add(9, "bad", ["y", ""])
    rejects.add(10, "bad", ["z", "more\r\nlines"])
    rejects.close()
    rejects.keep_through(9)
    with rejects.path.open(encoding="utf-8", newline="") as file:
        assert [row[0] for row in csv.reader(file)] == ["line", "3", "9"]
    rejects.keep_through(0)
    assert rejects.path.read_bytes() == b"line,reason,email,note\r\n"


def test_progress_without_a_terminal_is_a_line_every_few_seconds() -> None:
    screen = io.StringIO()
    meter = ImportMeter(1000, dry_run=False, console=Console(file=screen))
    counts = Counts(created=100, merged=10, failed=10, lines=121, offset=500, started=(20, 1))
    meter(counts)
    assert screen.getvalue() == ""  # not yet
    meter.PLAIN_EVERY = 0
    meter(counts)
    assert re.fullmatch(
        r"imported 121 lines \(created 100, merged 10, failed 10\), [0-9,]+ lines/s\n",
        screen.getvalue(),
    )
    meter.close()


def test_progress_on_a_terminal_is_a_bar() -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120)
    meter = ImportMeter(1000, dry_run=False, console=terminal)
    meter(Counts(created=100, lines=101, offset=500))
    meter.close()
    shown = screen.getvalue()
    assert "importing" in shown
    assert "lines/s" in shown
    assert "0.5/1.0 kB" in shown


def test_the_batch_size_is_bounded_as_the_batch_endpoint() -> None:
    assert cli.MAX_BATCH == MAX_BATCH


async def test_a_file_is_known_by_its_real_path(
    importer: Importer, db: Database, space: int, tmp_path: Path
) -> None:
    real = tmp_path / "real.csv"
    real.write_text("email\na@example.com\nbad\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert (await importer.json(str(space), str(link)))["created"] == 1
    assert [row[0] for row in rejects_of(link)] == ["line", "3"]  # beside FILE as given
    assert not has_rejects(real)
    with real.open("a") as file:
        file.write("b@example.com\n")
    assert await importer.json(str(space), str(link), "--resume") == {
        "created": 2,
        "merged": 0,
        "failed": 1,
        "lines": 4,
    }
    progress = await progress_of(db, space, real)
    assert progress is not None
    assert progress.lines == 4


async def test_postgresql_has_statistics_of_the_contacts_after_an_import(
    importer: Importer, db: Database, space: int, tmp_path: Path, is_postgres: bool
) -> None:
    """A list with filters plans from them (without, it can read the whole Space a page)."""
    if not is_postgres:
        pytest.skip("PostgreSQL's statistics: the PostgreSQL pass checks them")

    async def analysed() -> int:
        async with db.reader() as session:
            count = await session.scalar(
                text("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'contacts'")
            )
            return int(count or 0)

    before = await analysed()
    path = tmp_path / "people.ndjson"
    path.write_text(json.dumps({"emails": ["a@example.com"]}) + "\n")
    await importer.json(str(space), str(path))
    deadline = asyncio.get_running_loop().time() + 10
    while await analysed() == before:  # the statistics collector reports a moment later
        assert asyncio.get_running_loop().time() < deadline, "contacts was not analysed"
        await asyncio.sleep(0.1)

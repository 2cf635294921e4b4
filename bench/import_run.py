"""Time `contactbase import` of N seed-shaped contacts, and the importing process's peak memory.

Writes N contacts shaped like the seed (2 emails, 2 phones, 2 names, 2 locations; every email
unique) to a CSV file, makes a fresh migrated database (PostgreSQL: dropped and created again;
SQLite: a new file), creates a Space with the CLI, then runs `contactbase import SPACE FILE
--json` as a child process and reports, as JSON, its wall time, contacts a second and peak
resident size (the child's own rusage, from wait4), after checking that every row was created.

Usage: .venv/bin/python bench/import_run.py [--lines 100000] [--database URL]
       [--batch-size 1000] [--save docs/results/issue12-import.json]
(default database: PostgreSQL contactbase_import_bench, recreated; pass
sqlite:////tmp/contactbase-import-bench.db for SQLite). With --save, the figures are merged
into that JSON file under "<backend>/<lines>".
"""

import argparse
import asyncio
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from contactbase.contacts.models import Contact, ContactEmail
from contactbase.db import Database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from database import fresh_database

CLI = str(Path(sys.executable).with_name("contactbase"))
HEADER = ["emails", "phones", "names", "locations"]


def write_contacts(path: Path, count: int) -> int:
    """N seed-shaped rows (values of a plural column joined by `|`); the file's size."""
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for n in range(count):
            writer.writerow(
                [
                    f"person{n}@example.com|person{n}.alt@example.org",
                    "+1234567890|+0987654321",
                    f"Person {n}|P. {n}",
                    "New York, NY|Los Angeles, CA",
                ]
            )
    return path.stat().st_size


def cli(url: str, *args: str) -> Any:
    env = {**os.environ, "CONTACTBASE_DATABASE_URL": url}
    done = subprocess.run([CLI, *args, "--json"], env=env, capture_output=True, check=True)
    return json.loads(done.stdout)


def run_import(url: str, space_id: int, path: Path, batch_size: int) -> dict[str, Any]:
    """The import as a child process: its answer, wall time and peak RSS (its own rusage)."""
    env = {**os.environ, "CONTACTBASE_DATABASE_URL": url}
    args = [CLI, "import", str(space_id), str(path), "--json", "--batch-size", str(batch_size)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        child = subprocess.Popen(args, env=env, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"import failed ({child.returncode}): {err.read().decode()}")
        answer = json.loads(out.read())
    return {"answer": answer, "seconds": seconds, "peak_rss_kib": usage.ru_maxrss}


async def stored(url: str, space_id: int) -> tuple[int, int]:
    """Contacts and emails in the Space, counted in the database."""
    db = Database(url, pool_size=1)
    try:
        async with db.reader() as session:
            contacts = await session.scalar(
                select(func.count()).select_from(Contact).where(Contact.space_id == space_id)
            )
            emails = await session.scalar(
                select(func.count())
                .select_from(ContactEmail)
                .where(ContactEmail.space_id == space_id)
            )
    finally:
        await db.dispose()
    return int(contacts or 0), int(emails or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000, help="Contacts (data rows).")
    parser.add_argument(
        "--database", default="postgresql://postgres@127.0.0.1:5432/contactbase_import_bench"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--save", type=Path, help="Merge the figures into this JSON file.")
    args = parser.parse_args()
    backend = "sqlite" if args.database.startswith("sqlite") else "postgresql"
    with tempfile.TemporaryDirectory(prefix="contactbase-import-") as directory:
        path = Path(directory) / "contacts.csv"
        size = write_contacts(path, args.lines)
        fresh_database(args.database)
        space_id = cli(args.database, "space", "create", "import bench")["id"]
        run = run_import(args.database, space_id, path, args.batch_size)
    contacts, emails = asyncio.run(stored(args.database, space_id))
    expected = {"created": args.lines, "merged": 0, "failed": 0, "lines": args.lines + 1}
    if run["answer"] != expected or (contacts, emails) != (args.lines, 2 * args.lines):
        raise SystemExit(f"expected {expected}, got {run['answer']}, {contacts} contacts stored")
    figures = {
        "backend": backend,
        "lines": args.lines,
        "csv_bytes": size,
        "batch_size": args.batch_size,
        "command": f"contactbase import {space_id} contacts.csv --json "
        f"--batch-size {args.batch_size}",
        "answer": run["answer"],
        "wall_seconds": round(run["seconds"], 1),
        "contacts_per_second": round(args.lines / run["seconds"]),
        "peak_rss_mib": round(run["peak_rss_kib"] / 1024, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
    }
    print(json.dumps(figures, indent=2))
    if args.save:
        saved = json.loads(args.save.read_text()) if args.save.exists() else {}
        saved[f"{backend}/{args.lines}"] = figures
        args.save.write_text(json.dumps(saved, indent=2) + "\n")


if __name__ == "__main__":
    main()

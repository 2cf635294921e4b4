"""Peak memory of an export of 100,000 contacts, against the process's idle size.

Seeds a Space with N contacts (bulk SQL), then, in a fresh process, measures the resident size
when idle, exports them with the real worker, checks the file has exactly N lines, and reports
the peak. Usage: .venv/bin/python bench/export_memory.py [--contacts 100000] [--database URL]
(default: PostgreSQL contactbase_bench_export, recreated; pass sqlite:////tmp/bench.db for SQLite).
"""

import argparse
import asyncio
import gzip
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import insert

from contactbase.contacts.export_worker import ExportWorker
from contactbase.contacts.exports import queue_export
from contactbase.contacts.models import Contact, ContactEmail
from contactbase.db import Database, utcnow
from contactbase.spaces import service

sys.path.insert(0, str(Path(__file__).resolve().parent))
from database import fresh_database

BATCH = 10_000


def status_kib(field: str) -> int:
    """A VmRSS / VmHWM figure of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


async def seed(url: str, count: int) -> int:
    """A Space with `count` contacts of one email each, inserted in bulk."""
    db = Database(url, pool_size=1)
    now = utcnow()
    async with db.writer() as session, session.begin():
        space_id = (await service.create_space(session, "export bench")).id
    for start in range(0, count, BATCH):
        people = range(start, min(start + BATCH, count))
        async with db.writer() as session, session.begin():
            created = await session.execute(
                insert(Contact).returning(Contact.id, Contact.email),
                [
                    {
                        "space_id": space_id,
                        "email": f"person{n}@example.com",
                        "name": f"Person {n}",
                        "phone": "+1234567890",
                        "location": "New York, NY",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n in people
                ],
            )
            await session.execute(
                insert(ContactEmail),
                [
                    {
                        "space_id": space_id,
                        "contact_id": contact_id,
                        "position": 0,
                        "value": email,
                        "normalised": email,
                    }
                    for contact_id, email in created
                ],
            )
        print(f"seeded {people.stop} contacts", flush=True)
    await db.dispose()
    return space_id


def reset_peak() -> None:
    """Restart the process's peak resident size (VmHWM) from its current size."""
    Path("/proc/self/clear_refs").write_text("5")


def count_lines(directory: Path) -> int:
    (path,) = directory.iterdir()
    with gzip.open(path, "rb") as lines:
        return sum(1 for _ in lines)


def empty(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()


async def measure(url: str, space_id: int, count: int) -> None:
    db = Database(url)
    directory = Path(tempfile.mkdtemp(prefix="contactbase-export-"))
    worker = ExportWorker(db, directory)
    # Warm up connections and statements on an empty window, so that idle means idle.
    async with db.writer() as session, session.begin():
        await queue_export(session, space_id, datetime(2000, 1, 1), datetime(2000, 1, 2))
    await worker.run_once()
    empty(directory)
    async with db.writer() as session, session.begin():
        await queue_export(session, space_id, datetime(2000, 1, 1), datetime(2100, 1, 1))
    idle = status_kib("VmRSS")
    reset_peak()
    began = time.perf_counter()
    assert await worker.run_once()
    seconds = time.perf_counter() - began
    peak = status_kib("VmHWM")
    written = count_lines(directory)
    await db.dispose()
    print(
        f"export of {count} contacts: {written} lines in {seconds:.1f} s; "
        f"idle RSS {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
        f"peak - idle {(peak - idle) / 1024:.1f} MiB (target < 50 MiB)"
    )
    if written != count:
        raise SystemExit(f"expected {count} lines, found {written}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument(
        "--database", default="postgresql://postgres@127.0.0.1:5432/contactbase_bench_export"
    )
    parser.add_argument("--measure-space", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_space is not None:
        asyncio.run(measure(args.database, args.measure_space, args.contacts))
        return
    fresh_database(args.database)
    space_id = asyncio.run(seed(args.database, args.contacts))
    # A fresh process, so that seeding leaves nothing in the measured one.
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--contacts",
            str(args.contacts),
            "--database",
            args.database,
            "--measure-space",
            str(space_id),
        ],
        check=True,
    )


if __name__ == "__main__":
    main()

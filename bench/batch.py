"""Batches of 1,000 contacts through POST /contacts/batch, served as users run it, beside a
ceiling: the same rows loaded with COPY into the same tables (PostgreSQL).

Each scenario sends the same number of 1,000-item batches over CONNECTIONS connections at once
(bodies built before the clock starts) and counts contacts per second; the ceiling loads the
same rows for other emails, as many batches over as many connections, each batch one
transaction: the contacts' ids taken from their sequence, then COPY of the contacts and of their
eight values. Scenarios:
- new: seed-shaped contacts (2 emails, 2 phones, 2 names, 2 locations), every email new;
- half merging: half the items new, half an email of a seeded contact with a new phone (a
  merge that adds a value).
On SQLite (`contactbase serve`, one worker, as `make run` starts it) the same two scenarios.
"""

import asyncio
import random
import time
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import orjson
from procs import cpu_seconds

from contactbase.db import async_url

BATCH = 1000
PATH = "/public-api/v1/contacts/batch"
SEED_SHAPED = {
    "phones": ["+1234567890", "+0987654321"],
    "names": ["John Doe", "Johnny"],
    "locations": ["New York, NY", "Los Angeles, CA"],
}


def new_item(who: str) -> dict[str, Any]:
    return {"emails": [f"{who}@example.com", f"{who}@example.org"], **SEED_SHAPED}


def bodies(tag: str, batches: int, seeded: int = 0) -> list[bytes]:
    """`batches` bodies of BATCH items; with `seeded`, half of each merges into one of the
    contacts seed1..seed{seeded}@example.com (distinct within a batch), adding a phone."""
    made = []
    for b in range(batches):
        items = [new_item(f"{tag}-{b}-{n}") for n in range(BATCH if not seeded else BATCH // 2)]
        if seeded:
            for n, g in enumerate(random.sample(range(1, seeded + 1), BATCH // 2)):
                items.append({"emails": [f"seed{g}@example.com"], "phones": [f"+9 {b:05d}{n:04d}"]})
            random.shuffle(items)
        made.append(orjson.dumps({"contacts": items}))
    return made


async def _send(port: int, key: str, sent: list[bytes], connections: int) -> float:
    """Seconds to send every body, `connections` at a time; each must answer 200."""
    queue = list(reversed(sent))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=120
    ) as client:

        async def worker() -> None:
            while queue:
                response = await client.post(PATH, content=queue.pop())
                if response.status_code != 200:
                    raise RuntimeError(
                        f"batch answered {response.status_code}: {response.text[:300]}"
                    )

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - began


def drive(
    port: int, key: str, workers: list[int], sent: list[bytes], connections: int
) -> dict[str, float]:
    """Contacts per second over the bodies, and the server's CPU per 1,000 contacts."""
    before = cpu_seconds(workers)
    seconds = asyncio.run(_send(port, key, sent, connections))
    cpu = cpu_seconds(workers) - before
    contacts = len(sent) * BATCH
    return {
        "contacts_per_s": round(contacts / seconds, 1),
        "cpu_ms_per_contact": round(cpu / contacts * 1000, 4),
        "batches": len(sent),
        "seconds": round(seconds, 2),
    }


def _rows(space_id: int, ids: list[int], who: list[str], now: datetime) -> dict[str, list[Any]]:
    """The rows the app writes for these new seed-shaped contacts, by table (the rows of
    bench/embedded.py's ceilings, with ids and times as PostgreSQL takes them)."""
    from embedded import VALUE_TABLES, contact_rows

    rows: dict[str, list[Any]] = {"contacts": [], **{table: [] for table in VALUE_TABLES}}
    for contact_id, name in zip(ids, who, strict=True):
        row, values = contact_rows(space_id, name)
        rows["contacts"].append((contact_id, *row[:5], now, now))
        for table, pairs in values.items():
            rows[table].extend((space_id, contact_id, p, *pair) for p, pair in enumerate(pairs))
    return rows


CONTACT_COLUMNS = [
    "id",
    "space_id",
    "email",
    "phone",
    "name",
    "location",
    "created_at",
    "updated_at",
]
VALUE_COLUMNS = ["space_id", "contact_id", "position", "value", "normalised"]


async def _copy(url: str, space_id: int, tag: str, batches: int, connections: int) -> float:
    parsed = async_url(url)
    pool = await asyncpg.create_pool(
        host=parsed.host,
        port=parsed.port or 5432,
        user=parsed.username,
        database=parsed.database,
        min_size=connections,
        max_size=connections,
    )
    todo = list(range(batches))

    async def loader() -> None:
        async with pool.acquire() as connection:
            while todo:
                b = todo.pop()
                who = [f"{tag}-{b}-{n}" for n in range(BATCH)]
                async with connection.transaction():
                    ids = [
                        row[0]
                        for row in await connection.fetch(
                            "SELECT nextval(pg_get_serial_sequence('contacts', 'id'))"
                            " FROM generate_series(1, $1)",
                            BATCH,
                        )
                    ]
                    rows = _rows(space_id, ids, who, datetime.now())
                    await connection.copy_records_to_table(
                        "contacts", records=rows.pop("contacts"), columns=CONTACT_COLUMNS
                    )
                    for table, records in rows.items():
                        await connection.copy_records_to_table(
                            table, records=records, columns=VALUE_COLUMNS
                        )

    try:
        began = time.perf_counter()
        await asyncio.gather(*(loader() for _ in range(connections)))
        return time.perf_counter() - began
    finally:
        await pool.close()


def copy_ceiling(url: str, space_id: int, tag: str, batches: int, connections: int) -> float:
    """Contacts per second loaded with COPY, as many batches over as many connections."""
    seconds = asyncio.run(_copy(url, space_id, tag, batches, connections))
    return round(batches * BATCH / seconds, 1)


def _both(
    port: int, url: str, workers: int, redis_url: str | None, prefix: str, tag: str, **run: Any
) -> dict[str, Any]:
    """The new and half-merging scenarios against a fresh server each, on a database of
    10,000 seeded contacts whose bench Space has `run["key"]`."""
    from harness import start_server
    from procs import workers_of

    sent = {
        f"{prefix}batch_new": bodies(tag + "n", run["batches"]),
        f"{prefix}batch_half_merge": bodies(tag + "m", run["batches"], seeded=10_000),
    }
    results = {}
    for name, made in sent.items():
        print(f"bench: {name.replace('_', ' ')} (contactbase serve, fresh) ...", flush=True)
        server = start_server(port, workers, redis_url, url)
        try:
            results[name] = drive(
                port, run["key"], workers_of(server.pid), made, run["connections"]
            )
        finally:
            server.terminate()
            server.wait(20)
    return results


def scenarios(port: int, connections: int, batches: int, tag: str) -> dict[str, Any]:
    """Both scenarios on PostgreSQL (2 workers, Redis, a fresh database of 10,000 seeded
    contacts) with the COPY ceiling, then on SQLite (one worker, as `make run` serves it)."""
    import tempfile
    from pathlib import Path

    from database import fresh_database
    from embedded import seed as seed_sqlite
    from harness import DATABASE_URL, REDIS_URL, make_key, seed

    results: dict[str, Any] = {"batch_connections": connections, "batch_batches": batches}
    run = {"batches": batches, "connections": connections}
    url = DATABASE_URL + "_batch"
    fresh_database(url)
    key = asyncio.run(make_key(url))
    asyncio.run(seed(10_000, url))
    results |= _both(port, url, 2, REDIS_URL, "", tag, key=key, **run)
    print("bench: batch ceiling (COPY of the same rows, as many connections) ...", flush=True)
    ceiling = copy_ceiling(url, 1, tag + "c", batches, connections)  # the bench Space: 1
    results["batch_copy_ceiling_per_s"] = ceiling
    results["batch_ratio"] = round(results["batch_new"]["contacts_per_s"] / ceiling, 3)
    path = Path(tempfile.mkdtemp(prefix="contactbase-bench-batch-")) / "bench.db"
    lite = f"sqlite:///{path}"
    fresh_database(lite)
    key = asyncio.run(make_key(lite))
    seed_sqlite(path, 1, 10_000)
    results |= _both(port, lite, 1, None, "sqlite_", tag + "s", key=key, **run)
    return results


if __name__ == "__main__":
    import argparse
    import json

    from harness import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(scenarios(free_port(), args.connections, args.batches, "b"), indent=2))

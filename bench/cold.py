"""The cold start: creates on a freshly migrated database, before the planner has statistics,
against the same server once the database is grown and analysed."""

import asyncio
import time
from typing import Any

from database import fresh_database
from harness import DATABASE_URL, REDIS_URL, make_key, scenario, seed, start_server, wrk
from procs import cpu_seconds, workers_of
from sqlalchemy import text

from contactbase.db import Database

COLD_URL = DATABASE_URL + "_cold"


def index_tuples_read() -> tuple[int, int]:
    """Index tuples read so far in the cold database, and contacts inserted so far, from
    PostgreSQL's statistics. A backend flushes its statistics a while after its transactions,
    not at once, so a window's count of tuples is set against the contacts counted in the
    same statistics (a create's reads and its insert are flushed together), not against the
    requests wrk saw in the window: those two disagree by what is not flushed yet, which made
    the first window look cheaper and the last dearer."""

    async def read() -> tuple[int, int]:
        db = Database(COLD_URL, pool_size=1)
        async with db.reader() as session:
            tuples = await session.scalar(
                text("SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes")
            )
            inserted = await session.scalar(
                text("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'contacts'")
            )
        await db.dispose()
        return int(tuples or 0), int(inserted or 0)

    time.sleep(1.5)
    return asyncio.run(read())


def cold_start(
    wrk_path: str, port: int, workers: int, connections: int, tag: str
) -> dict[str, Any]:
    """Creates on a freshly migrated database (no seeding, no ANALYZE, autovacuum as the server
    has it) for 20 s in three runs, 5 + 10 + 5 s, reading the index tuples read per create in
    the first and the last; then, on the same server, the warm figure: after seeding 10,000
    contacts and ANALYZE."""
    fresh_database(COLD_URL)
    key = asyncio.run(make_key(COLD_URL))
    server = start_server(port, workers, REDIS_URL, COLD_URL)
    args = ["create", key, tag + "c", "0", "0", "0"]
    try:
        pids = workers_of(server.pid)
        before_cpu, runs, per_create = cpu_seconds(pids), [], []
        for index, seconds in enumerate((5, 10, 5)):
            tuples, inserted = index_tuples_read()
            figures = wrk(
                wrk_path, port, [*args[:2], f"{tag}c{index}", *args[3:]], seconds, connections
            )
            runs.append(figures)
            tuples_after, inserted_after = index_tuples_read()
            per_create.append((tuples_after - tuples) / max(1, inserted_after - inserted))
        requests = sum(figures["requests"] for figures in runs)
        cold_rps = requests / sum(figures["duration_us"] for figures in runs) * 1e6
        cold_cpu = (cpu_seconds(pids) - before_cpu) / requests * 1000
        asyncio.run(seed(10_000, COLD_URL))
        warm = scenario(wrk_path, port, pids, [*args[:2], tag + "cw", *args[3:]], 10, connections)
    finally:
        server.terminate()
        server.wait(20)
    return {
        "cold_create_rps": round(cold_rps, 1),
        "cold_create_cpu_s_per_1000": round(cold_cpu, 3),
        "cold_index_tuples_per_create": [round(value, 1) for value in per_create],
        "cold_warm_create": warm,
    }

"""custom_field_filters for `make bench` (issue 15, SPEC 6.7): PostgreSQL, a fresh `contactbase
serve --workers 2` with the Redis limiter for each run, as the other scenarios serve it.

- filtered_list: GET /contacts with two filters (profile_field_16 above 500, profile_field_26 in
  the first half of 2025: about 8%) over COUNT contacts in one Space, seeded by one INSERT ...
  SELECT with custom fields (1 on a third, 16 uniform over 0..1000, 26 a day of 2023-2025, one
  in five a date-time) but no value rows, which the list never reads. CLIENTS clients (httpx,
  here) each follow next_cursor from the first page for SECONDS after a warm-up: latency, rows
  returned per second of wall time, the workers' CPU per 1,000 rows. Before any ANALYZE
  (autovacuum is off on the bench machine) at per_page 200, then after ANALYZE at 200 and 1000;
  each time EXPLAIN (ANALYZE, BUFFERS) of the statement list_contacts sends, EXECUTE'd after ten
  executions prepared, so in the plan (generic or custom) the workers' plan cache settles on.
- filter_indexes_create: POST /contacts of seed-shaped contacts setting profile_field_1, 16 and
  26, under wrk, on a fresh database of 10,000 contacts migrated to head, and on one whose 15
  ix_contacts_space_id_profile_field_N are dropped: alternating rounds, medians, their ratio.

    .venv/bin/python bench/filters.py [--contacts 1000000] [--seconds 10] [--rounds 3]
"""

import asyncio
import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
from batch import new_item
from database import fresh_database
from harness import DATABASE_URL, REDIS_URL, RESULT, ROOT, VALUE_ROWS, free_port, make_key, seed
from harness import start_server as start
from procs import cpu_seconds, peak_rss_mb, workers_of
from sqlalchemy import event, func, select, text

from contactbase.contacts import filter_clauses, reads
from contactbase.contacts.models import INDEXED_SLOTS, Contact
from contactbase.contacts.schemas import ListQuery
from contactbase.db import Database
from contactbase.spaces.models import Space

FILTERS = (
    '[{"field":"profile_field_16","operator":"greater_than","value":500},'
    '{"field":"profile_field_26","operator":"between","start":"2025-01-01","end":"2025-06-30"}]'
)
SEED = f"""
INSERT INTO contacts (space_id, email, phone, name, location, created_at, updated_at,
  profile_field_1, profile_field_16, profile_field_26)
SELECT (SELECT id FROM spaces WHERE name = 'bench'), 'seed' || g || '@example.com',
  {VALUE_ROWS["contact_phones"][0][0]}, 'Seed ' || g, {VALUE_ROWS["contact_locations"][0][0]},
  t.at, t.at,
  CASE WHEN g % 3 = 0 THEN (ARRAY['gold', 'silver', 'Paid via partner'])[1 + g % 9 / 3] END,
  floor(random() * 1001),
  CASE WHEN g % 5 = 0
    THEN to_char(t.day + random() * interval '1 day', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
    ELSE to_char(t.day, 'YYYY-MM-DD') END
FROM generate_series(1, {{count}}) AS g, LATERAL (SELECT
  timestamp '2026-01-01' + g * interval '1 second' AS at,
  date '2023-01-01' + floor(random() * 1096)::int AS day) AS t
"""
# A create as bench/batch.py's items, setting three slots: for string.format in Lua, the
# contact's tag twice, a number (unquoted), a day.
SLOTS = {"profile_field_1": "gold", "profile_field_16": "%d", "profile_field_26": "%s"}
BODY = json.dumps({**new_item("%s"), "custom_fields": SLOTS}).replace('"%d"', "%d")
# bench/wrk.lua (its arguments, no pause, the BENCH line), its request a create of BODY.
CREATE_LUA = """dofile("%(wrk)s")
local wrk_init, key, tag, counter = init, nil, nil, 0
function init(args)
  wrk_init(args)
  key, tag = args[2], args[3]
end
function request()
  counter = counter + 1
  local who = string.format("%%s-%%d-%%d", tag, thread_id, counter)
  local day = string.format("%%d-%%02d-%%02d", math.random(2023, 2025), math.random(12),
    math.random(28))
  if counter %% 5 == 0 then day = day .. string.format("T%%02d:15:00Z", math.random(0, 23)) end
  return wrk.format("POST", "/public-api/v1/contacts",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"},
    string.format('%(body)s', who, who, math.random(0, 1000), day))
end
"""


@contextmanager
def serving(url: str, redis_url: str) -> Iterator[tuple[int, list[int]]]:
    """A fresh server (2 workers) on the database: its port and worker pids."""
    port = free_port()
    server = start(port, 2, redis_url, url)
    try:
        yield port, workers_of(server.pid)
    finally:
        server.terminate()
        server.wait(20)


async def execute(url: str, *statements: str) -> None:
    """The statements on one connection, each committed alone."""
    db = Database(url, pool_size=1)
    async with db.engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for statement in statements:
            await connection.execute(text(statement))
    await db.dispose()


async def explain(url: str, per_page: int) -> dict[str, Any]:
    """The first page's plan (see the top), the indexes it reads, the contacts it selects."""
    db = Database(url, pool_size=1)
    sent: list[tuple[str, Any]] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *a: sent.append(a[2:4]))
    async with db.reader() as session:
        space_id, zone = (await session.execute(select(Space.id, Space.timezone))).one()
        conditions = ListQuery(custom_field_filters=FILTERS).custom_field_filters or []
        clauses = filter_clauses.where(conditions, zone, reads.today_in(zone))
        chosen = reads.ListFilters(custom=clauses)
        await reads.list_contacts(session, space_id, chosen, None, per_page)
        sql, params = sent[-1]
        live = select(func.count()).where(Contact.space_id == space_id)
        live = live.where(Contact.merged_into_id.is_(None))
        figures = {"contacts": await session.scalar(live)}
        figures["matching"] = await session.scalar(live.where(*clauses))
        run = (await session.connection()).exec_driver_sql
        await run(f"PREPARE filtered AS {sql}")
        values = ", ".join("'" + str(value).replace("'", "''") + "'" for value in params)
        call = f"EXECUTE filtered({values})"
        for _ in range(10):
            await run(call)
        generic = "SELECT generic_plans FROM pg_prepared_statements WHERE name = 'filtered'"
        before = (await run(generic)).scalar_one()
        lines = [row[0] for row in await run(f"EXPLAIN (ANALYZE, BUFFERS) {call}")]
        figures["plan_mode"] = "generic" if (await run(generic)).scalar_one() > before else "custom"
    await db.dispose()
    used = re.findall(r"(?:Scan(?: Backward)? using|Bitmap Index Scan on) (\w+)", "\n".join(lines))
    return figures | {"indexes": sorted(set(used)), "plan": lines}


async def walk(port: int, key: str, per_page: int, clients: int, seconds: float) -> dict[str, Any]:
    """CLIENTS clients following pages until SECONDS are over (a walk that ends starts again)."""
    query = {"per_page": str(per_page), "custom_field_filters": FILTERS}
    latencies: list[float] = []
    rows, deadline = 0, time.perf_counter() + seconds
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as client:

        async def follow() -> None:
            nonlocal rows
            cursor = None
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                params = {**query, "cursor": cursor} if cursor else query
                response = await client.get("/public-api/v1/contacts", params=params)
                latencies.append(time.perf_counter() - sent)
                if response.status_code != 200:
                    raise RuntimeError(f"list: {response.status_code} {response.text[:300]}")
                page = orjson.loads(response.content)
                rows, cursor = rows + len(page["data"]), page["next_cursor"]

        began = time.perf_counter()
        await asyncio.gather(*(follow() for _ in range(clients)))
        wall = time.perf_counter() - began
    cuts = [round(cut * 1000, 2) for cut in statistics.quantiles(latencies, n=100)]
    return {
        "rows_per_s": round(rows / wall, 1),
        "requests_per_s": round(len(latencies) / wall, 1),
        **{"p50_ms": cuts[49], "p90_ms": cuts[89], "p99_ms": cuts[98]},
        "rows": rows,
    }


def listing(url: str, redis_url: str, key: str, per_page: int, clients: int, seconds: int) -> Any:
    """walk's figures on a fresh server after a warm-up, with the server's CPU and memory."""
    with serving(url, redis_url) as (port, workers):
        asyncio.run(walk(port, key, per_page, clients, min(2, seconds)))  # warm-up
        before, client = cpu_seconds(workers), time.process_time()
        figures = asyncio.run(walk(port, key, per_page, clients, seconds))
        cpu = cpu_seconds(workers) - before
        figures["cpu_s_per_1000_rows"] = round(cpu / max(1, figures["rows"]) * 1000, 4)
        figures["client_cpu_s"] = round(time.process_time() - client, 2)
        figures["rss_mb_per_worker"] = round(peak_rss_mb(workers), 1)
    print(f"bench: filtered list, per_page {per_page}: {figures}", flush=True)
    return figures


def filtered_list(
    count: int,
    seconds: int,
    clients: int = 4,
    per_pages: tuple[int, ...] = (200, 1000),
    url: str = DATABASE_URL + "_filters",
    redis_url: str = REDIS_URL,
) -> dict[str, Any]:
    """The filtered list on a fresh database of COUNT contacts, before and after ANALYZE."""
    print(f"bench: filtered list, seeding {count:,} contacts with custom fields ...", flush=True)
    fresh_database(url)
    key = asyncio.run(make_key(url))
    began = time.perf_counter()
    asyncio.run(execute(url, "SELECT setseed(0.15)", SEED.format(count=count)))
    results: dict[str, Any] = {"filters": json.loads(FILTERS), "clients": clients}
    results |= {"seconds": seconds, "seed_seconds": round(time.perf_counter() - began, 1)}
    for stage in ("not_analysed", "analysed"):
        if stage == "analysed":
            asyncio.run(execute(url, "ANALYZE"))
        plan = results.setdefault(stage, {})["plan"] = asyncio.run(explain(url, per_pages[0]))
        print(f"bench: filtered list, {stage}: {plan['plan_mode']} plan on {plan['indexes']}")
        for per_page in per_pages[:1] if stage == "not_analysed" else per_pages:
            figures = listing(url, redis_url, key, per_page, clients, seconds)
            results[stage][f"per_page_{per_page}"] = figures
    return results


def filter_indexes_create(
    wrk_path: str,
    rounds: int,
    seconds: int,
    connections: int,
    url: str = DATABASE_URL + "_filters_create",
    redis_url: str = REDIS_URL,
) -> dict[str, Any]:
    """Create throughput with the 15 slot indexes and without, in alternating rounds."""
    drops = [f"DROP INDEX ix_contacts_space_id_profile_field_{n}" for n in INDEXED_SLOTS]
    script = ROOT / "bench" / "results" / "create_fields.lua"  # beside run.py's pgbench scripts
    script.write_text(CREATE_LUA % {"wrk": ROOT / "bench/wrk.lua", "body": BODY})

    def one_round(drop: bool, tag: str) -> dict[str, float]:
        """On a fresh database of 10,000 contacts (the slot indexes dropped when `drop`), after
        a CHECKPOINT, a fresh server: a warm-up (2 s at most), then the measured run."""
        fresh_database(url)
        key = asyncio.run(make_key(url))
        asyncio.run(seed(10_000, url))
        asyncio.run(execute(url, *(drops if drop else []), "CHECKPOINT"))
        with serving(url, redis_url) as (port, workers):
            for tagged, duration in ((tag + "w", min(2, seconds)), (tag, seconds)):
                before = cpu_seconds(workers)
                command = [wrk_path, "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(script)]
                command += [f"http://127.0.0.1:{port}", "--", "create", key, tagged]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                cpu = cpu_seconds(workers) - before
        found = RESULT.search(output)  # the measured run's
        if found is None:
            raise RuntimeError(f"wrk printed no result:\n{output}")
        figures = {name: float(value) for name, value in (p.split("=") for p in found[1].split())}
        if figures["non2xx"] or figures["errors"]:
            raise RuntimeError(f"failed requests during the run: {figures}")
        return {
            "rps": round(figures["requests"] / figures["duration_us"] * 1e6, 1),
            **{"p50_ms": figures["p50_us"] / 1000, "p99_ms": figures["p99_us"] / 1000},
            "cpu_s_per_1000": round(cpu / figures["requests"] * 1000, 3),
        }

    runs: dict[str, list[dict[str, float]]] = {"with_indexes": [], "without_indexes": []}
    for number in range(1, rounds + 1):
        for name, done in runs.items():
            print(f"bench: creates with custom fields, {name}, round {number} ...", flush=True)
            done.append(one_round(name == "without_indexes", f"f{number}{name[:2]}"))
            print(f"bench: {done[-1]}", flush=True)
    results: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "connections": connections}
    for name, done in runs.items():
        results[name] = {field: statistics.median(run[field] for run in done) for field in done[0]}
        results[f"{name}_rps_rounds"] = [run["rps"] for run in done]
    results["ratio"] = round(results["with_indexes"]["rps"] / results["without_indexes"]["rps"], 3)
    return results


if __name__ == "__main__":
    import argparse

    from harness import ensure_wrk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    found = {"filtered_list": filtered_list(args.contacts, args.seconds, args.clients)}
    found["filter_indexes_create"] = filter_indexes_create(
        ensure_wrk(), args.rounds, args.seconds, args.connections
    )
    print(json.dumps(found, indent=2))

"""`make bench`: contactbase on PostgreSQL under wrk, beside pgbench running the same SQL.

Serves contactbase as users run it (`contactbase serve --workers WORKERS` with the Redis
limiter, every other setting at its default, the access log on), a fresh server for each
scenario, for a Space whose limits are out of the way and whose contacts are shaped like real
ones; drives each scenario with wrk and reads the workers' CPU time. The ceiling of create and
get is pgbench running the very statements those requests run, prepared as the app prepares
them, over as many connections as the app holds; their ratios are the medians of rounds (each
the app's run, then its ceiling's, on a fresh server); a ratio above 1 fails the run. A cold start
runs on a freshly migrated database. Batches of 1,000 contacts (bench/batch.py) run beside
COPY of the same rows; webhook deliveries per second to a local receiver (bench/webhooks.py);
custom_field_filters: a filtered list over 1,000,000 contacts, and creates with the slot indexes
beside creates without them (bench/filters.py).
Prints a table and writes bench/results/latest.json.
`--quick`: create, get, re-send and the cold start.
"""

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from contactbase.contacts.reads import WHOLE_CONTACT
from contactbase.contacts.statements import NEW_CONTACT
from contactbase.db import Database
from contactbase.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batch
import embedded
import filters
from cold import cold_start
from database import fresh_database
from harness import (
    DATABASE_URL,
    REDIS_URL,
    ROOT,
    ensure_wrk,
    free_port,
    make_key,
    scenario,
    seed,
    start_server,
)
from procs import workers_of

import webhooks  # bench/webhooks.py (isort places it apart, taking it for tests/webhooks)


def sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(sql_literal(item) for item in value) + "]"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def script(prepared: Any, values: dict[str, str]) -> str:
    """A prepared statement of the app as a pgbench line: each $n replaced by the SQL given
    for its parameter (pgbench variables, which -M prepared binds as parameters, or
    constants; pgbench cannot bind arrays, so arrays are built with ARRAY[...])."""
    sql = re.sub(r"\$(\d+)", lambda m: values[prepared.names[int(m.group(1)) - 1]], prepared.sql)
    return " ".join(sql.split()) + ";\n"


def ceiling_scripts(space_id: int, first: int, last: int, directory: Path) -> None:
    """pgbench scripts running the statements of a create and of a get as the app runs them
    (the same prepared SQL; the app's parameters from pgbench variables)."""
    who = "('pgb-' || :client_id || '-' || :n)"
    emails = [f"{who} || '@example.com'", f"{who} || '@example.org'"]
    constants: dict[str, Any] = {
        "now": "2026-11-26 00:00:00",
        "phone": "+1234567890",
        "name": "John Doe",
        "location": "New York, NY",
        "emails_positions": [0, 1],
        "phones_positions": [0, 1],
        "phones_values": ["+1234567890", "+0987654321"],
        "phones_normalised": ["1234567890", "0987654321"],
        "names_positions": [0, 1],
        "names_values": ["John Doe", "Johnny"],
        "names_normalised": ["John Doe", "Johnny"],
        "locations_positions": [0, 1],
        "locations_values": ["New York, NY", "Los Angeles, CA"],
        "locations_normalised": ["New York, NY", "Los Angeles, CA"],
    }
    values = {name: sql_literal(constants.get(name)) for name in NEW_CONTACT.names}
    values |= {
        "space_id": ":space",
        "email": emails[0],
        "emails_values": f"ARRAY[{', '.join(emails)}]",
        "emails_normalised": f"ARRAY[{', '.join(emails)}]",
    }
    space = f"\\set space {space_id}\n"
    # The key is cached (spaces/keycache.py: its mark comes back with the rate-limit count in
    # Redis), so the database's work is the statement alone. A create: the one-statement
    # insert, its own transaction.
    (directory / "create.sql").write_text(
        space + "\\set n random(1, 1000000000000)\n" + script(NEW_CONTACT, values)
    )
    # A get: the contact whole (one statement), outside a transaction.
    of_contact = {"space_id": ":space", "contact_id": ":id"}
    (directory / "get.sql").write_text(
        space + f"\\set id random({first}, {last})\n" + script(WHOLE_CONTACT, of_contact)
    )


def pgbench(script: Path, connections: int, seconds: int) -> float:
    """Transactions per second of the script, in the prepared protocol as the app speaks it,
    after a 2 s warm-up like the app's."""
    from sqlalchemy.engine import make_url

    url = make_url(DATABASE_URL)
    for duration in (2, seconds):
        tps = _pgbench(url, script, connections, duration)
    return tps


def _pgbench(url: Any, script: Path, connections: int, seconds: int) -> float:
    output = subprocess.run(
        [
            "pgbench",
            "-M",
            "prepared",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            "-n",
            "-c",
            str(connections),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-f",
            str(script),
            url.database or "",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"tps = ([0-9.]+)", output)
    if match is None:
        raise RuntimeError(output)
    return float(match.group(1))


def paced(
    wrk_path: str,
    port: int,
    workers: list[int],
    args: list[str],
    full: dict[str, float],
    seconds: int,
    connections: int,
) -> dict[str, float]:
    """Creates at about half the full-load throughput: each connection pauses between requests
    for its share of the period, less the unloaded latency (the full run's p50 / 4 as a guess)."""
    period_ms = connections * 1000 / (full["rps"] / 2)
    pause = max(0, round(period_ms - full["p50_ms"] / 4))
    figures = scenario(wrk_path, port, workers, ["create", *args, str(pause)], seconds, connections)
    return {**figures, "pause_ms": pause, "share_of_full": round(figures["rps"] / full["rps"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="create and get only")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of create and get beside their ceilings"
    )
    args = parser.parse_args()
    seconds = 5 if args.quick else args.seconds
    wrk_path = ensure_wrk()
    fresh_database(DATABASE_URL)
    key = asyncio.run(make_key())
    first, last = asyncio.run(seed(10_000))
    directory = ROOT / "bench" / "results"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    results: dict[str, Any] = {"workers": args.workers, "connections": args.connections}
    tag = uuid.uuid4().hex[:8]
    seeded = ["10000", str(first), str(last)]
    plan = [
        ("create", "create at 10,000 contacts"),
        ("get", "get by id"),
        ("resend", "re-send of a known contact, nothing new"),
    ]
    if not args.quick:
        plan += [("merge", "create that merges, adding a phone"), ("list", "list pages of 200")]
    for mode, title in plan:
        print(f"bench: {title} (a fresh server) ...", flush=True)
        with serving(port, args.workers) as workers:
            results[mode] = scenario(
                wrk_path, port, workers, [mode, key, tag, *seeded], seconds, args.connections
            )
        if mode == "create":
            print("bench: create paced at half that throughput ...", flush=True)
            with serving(port, args.workers) as workers:
                results["create_paced"] = paced(
                    wrk_path,
                    port,
                    workers,
                    [key, tag + "p", *seeded],
                    results["create"],
                    seconds,
                    args.connections,
                )
    print("bench: cold start (a fresh database, no statistics) ...", flush=True)
    results.update(cold_start(wrk_path, port, args.workers, args.connections, tag))
    results.update(embedded.scenarios(wrk_path, port, args.connections, seconds, tag))
    space_id = asyncio.run(space_of_bench())
    ceiling_scripts(space_id, first, last, directory)
    # As many connections as the app holds: each worker's pool, at its default size.
    connections = args.workers * Settings().db_pool_size
    results["ceiling_connections"] = connections
    print(f"bench: ceilings (pgbench -M prepared, same SQL, {connections} connections) ...")
    for mode in ("create", "get"):
        tps = pgbench(directory / f"{mode}.sql", connections, seconds)
        results[f"{mode}_ceiling_tps"] = round(tps, 1)
    # The ratios themselves from rounds in which the app's run and its ceiling's follow each
    # other, so that both meet the machine in the same state (it drifts: a tenth either way
    # between runs of one scenario); the median of the rounds' ratios is reported.
    for mode in ("create", "get"):
        ratios = []
        for round_number in range(1, args.rounds + 1):
            print(f"bench: {mode} against its ceiling, round {round_number} ...", flush=True)
            with serving(port, args.workers) as workers:
                app = scenario(
                    wrk_path,
                    port,
                    workers,
                    [mode, key, f"{tag}r{round_number}", *seeded],
                    seconds,
                    args.connections,
                )
            tps = pgbench(directory / f"{mode}.sql", connections, seconds)
            ratios.append(round(app["rps"] / tps, 3))
        results[f"{mode}_ratio_rounds"] = ratios
    if not args.quick:
        results.update(batch.scenarios(port, 4, 40, tag))
        results["webhooks"] = webhooks.scenarios(events=5_000, rounds=3)
        results["filtered_list"] = filters.filtered_list(1_000_000, seconds)
        results["filter_indexes_create"] = filters.filter_indexes_create(
            wrk_path, max(3, args.rounds), seconds, args.connections
        )
        # The two sizes measured alike, one after the other: each after a CHECKPOINT (so that
        # neither pays for the writes before it) on a fresh server.
        for size, label in ((None, "create_at_small"), (1_000_000, "create_at_1m")):
            if size is not None:
                print("bench: growing to 1,000,000 contacts (bulk SQL) ...", flush=True)
                asyncio.run(seed(size))
            print(f"bench: {label} (after a checkpoint, a fresh server) ...", flush=True)
            asyncio.run(checkpoint())
            with serving(port, args.workers) as workers:
                results[label] = scenario(
                    wrk_path,
                    port,
                    workers,
                    ["create", key, tag + label[-2:], *seeded],
                    seconds,
                    args.connections,
                )
    summary = summarise(results)
    (directory / "latest.json").write_text(json.dumps(summary, indent=2))
    print_table(summary)
    ratios = ("create_ratio", "get_ratio", "sqlite_create_ratio", "sqlite_get_ratio", "batch_ratio")
    beyond = [name for name in ratios if summary.get(name, 0) > 1.0]
    beyond += [
        f"{mode} in a round"
        for mode in ("create", "get")
        if max(summary[f"{mode}_ratio_rounds"]) > 1.0
    ]
    if beyond:
        raise SystemExit(f"bench: {', '.join(beyond)} above 1.0: that ceiling is not a ceiling")


@contextmanager
def serving(port: int, workers: int) -> Iterator[list[int]]:
    """A fresh server for one scenario (PostgreSQL, the Redis limiter): its worker pids."""
    server = start_server(port, workers, REDIS_URL)
    try:
        yield workers_of(server.pid)
    finally:
        server.terminate()
        server.wait(20)


async def checkpoint() -> None:
    db = Database(DATABASE_URL, pool_size=1)
    async with db.engine.connect() as connection:
        await connection.execute(text("CHECKPOINT"))
    await db.dispose()


async def space_of_bench() -> int:
    db = Database(DATABASE_URL, pool_size=1)
    async with db.reader() as session:
        space_id = int(
            await session.scalar(text("SELECT min(id) FROM spaces WHERE name = 'bench'"))
        )
    await db.dispose()
    return space_id


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    summary = dict(results)
    summary["create_rps"] = results["create"]["rps"]
    summary["get_rps"] = results["get"]["rps"]
    for mode in ("create", "get"):
        summary[f"{mode}_ratio"] = statistics.median(results[f"{mode}_ratio_rounds"])
    # The target's p99: at about half the maximum throughput (the paced run).
    summary["create_p99_ms"] = results["create_paced"]["p99_ms"]
    summary["rss_mb_per_worker"] = max(
        value["rss_mb_per_worker"]
        for value in results.values()
        if isinstance(value, dict) and "rss_mb_per_worker" in value
    )
    for mode in ("create", "get"):
        rps, ceiling = results[f"sqlite_{mode}"]["rps"], results[f"sqlite_{mode}_ceiling_tps"]
        summary[f"sqlite_{mode}_ratio"] = round(rps / ceiling, 3)
    # The reference for the target: plain sqlite3 committing each contact alone (the
    # app commits several together, so this one is no ceiling: it can be passed).
    summary["sqlite_create_vs_commit_each"] = round(
        results["sqlite_create"]["rps"] / results["sqlite_create_commit_each_tps"], 3
    )
    summary["noop_merge_ratio"] = round(results["resend"]["rps"] / results["create"]["rps"], 3)
    if "merge" in results:
        summary["merge_ratio"] = round(results["merge"]["rps"] / results["create"]["rps"], 3)
    if "filtered_list" in results:
        # The grown database's (after ANALYZE), pages of 200; the create ratio's target: 0.9+.
        page = results["filtered_list"]["analysed"]["per_page_200"]
        summary["filtered_list_p50_ms"] = page["p50_ms"]
        summary["filtered_list_rows_per_s"] = page["rows_per_s"]
        summary["filter_indexes_create_ratio"] = results["filter_indexes_create"]["ratio"]
    first, *_middle, last = results["cold_index_tuples_per_create"]
    summary["cold_create_ratio"] = round(
        results["cold_create_rps"] / results["cold_warm_create"]["rps"], 3
    )
    summary["cold_index_growth"] = round(last / first, 3) if first else None
    if "create_at_1m" in results:
        # Against the small Space measured just before, alike (tens of thousands of contacts
        # by then: the scenarios before it added theirs).
        summary["create_ratio_at_1m_vs_10k"] = round(
            results["create_at_1m"]["rps"] / results["create_at_small"]["rps"], 3
        )
    return summary


def print_table(summary: dict[str, Any]) -> None:
    print(
        f"\n{'scenario':<14}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'CPU s/1k':>10}{'RSS MB':>8}"
    )
    for name, figures in summary.items():
        if isinstance(figures, dict) and "rps" in figures:
            print(
                f"{name:<14}{figures['rps']:>9.1f}{figures['p50_ms']:>9.1f}"
                f"{figures['p90_ms']:>9.1f}{figures['p99_ms']:>9.1f}"
                f"{figures['cpu_s_per_1000']:>10.2f}{figures['rss_mb_per_worker']:>8.1f}"
            )
    for name in (
        "noop_merge_ratio",
        "merge_ratio",
        "cold_create_rps",
        "cold_create_cpu_s_per_1000",
        "cold_create_ratio",
        "cold_index_tuples_per_create",
        "cold_index_growth",
        "sqlite_writes_per_commit",
        "sqlite_create_ceiling_tps",
        "sqlite_create_ratio",
        "sqlite_create_commit_each_tps",
        "sqlite_create_vs_commit_each",
        "sqlite_get_ceiling_tps",
        "sqlite_get_ratio",
        "create_ceiling_tps",
        "create_ratio_rounds",
        "create_ratio",
        "get_ceiling_tps",
        "get_ratio_rounds",
        "get_ratio",
        "create_ratio_at_1m_vs_10k",
        "batch_new",
        "batch_half_merge",
        "batch_copy_ceiling_per_s",
        "batch_ratio",
        "sqlite_batch_new",
        "sqlite_batch_half_merge",
        "webhooks",
        "filtered_list_p50_ms",
        "filtered_list_rows_per_s",
        "filter_indexes_create_ratio",
    ):
        if name in summary:
            print(f"{name}: {summary[name]}")


if __name__ == "__main__":
    main()

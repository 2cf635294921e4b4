"""How close to the database can a Python server on this stack come? A floor for `make bench`'s
create and get ratios: the least an app can do for each, beside the app and the same pgbench
ceiling, in alternating rounds.

The floor is a bare ASGI app under uvicorn (as many workers as the app, no access log): it
counts the request in Redis with the app's own limiter (one round trip, as a cached key's
request makes), runs the app's statement (`statements.NEW_CONTACT` from the JSON body with the
simplest normal forms, or `reads.WHOLE_CONTACT`, prepared by asyncpg on a pool of the app's
size) and answers JSON. No key look-up, validation, middleware or error handling: whatever the
app does beyond that is its own cost. Run after `make bench` (it
uses the bench database, its key and seeded contacts):

    .venv/bin/python bench/floor.py --rounds 3 --seconds 10
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from harness import (  # noqa: E402
    DATABASE_URL,
    REDIS_URL,
    ensure_wrk,
    free_port,
    scenario,
    start_server,
)
from procs import wait_until_healthy, workers_of  # noqa: E402

from contactbase.db import Database  # noqa: E402
from contactbase.spaces import service  # noqa: E402


def app() -> Any:
    """The floor app (built in each uvicorn worker: `uvicorn --factory bench.floor:app`)."""
    import asyncpg
    import orjson
    from sqlalchemy.engine import make_url

    from contactbase.contacts.custom_fields import SLOTS
    from contactbase.contacts.models import PRIMARY_COLUMN
    from contactbase.contacts.reads import WHOLE_CONTACT
    from contactbase.contacts.statements import NEW_CONTACT
    from contactbase.ratelimit import build_limiter

    url = make_url(os.environ["FLOOR_DATABASE_URL"])
    limiter = build_limiter(os.environ["FLOOR_REDIS_URL"])
    space_id = int(os.environ["FLOOR_SPACE_ID"])
    pool: list[Any] = []

    async def floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()  # startup
            pool.append(
                await asyncpg.create_pool(
                    host=url.host,
                    port=url.port,
                    user=url.username,
                    database=url.database,
                    min_size=10,
                    max_size=10,
                )
            )
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        if scope["method"] == "POST":
            status, body = await create(receive)
        else:
            status, body = await get(int(scope["path"].rsplit("/", 1)[1]))
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def get(contact_id: int) -> tuple[int, bytes]:
        await limiter.hit(space_id, "get", 1_000_000_000)
        params = {"space_id": space_id, "contact_id": contact_id}
        async with pool[0].acquire() as connection:
            row = await connection.fetchrow(
                WHOLE_CONTACT.sql, *(params[name] for name in WHOLE_CONTACT.names)
            )
        return 200, orjson.dumps(dict(row) if row else {}, default=str)

    async def create(receive: Any) -> tuple[int, bytes]:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        sent = orjson.loads(b"".join(chunks))
        await limiter.hit(space_id, "create", 1_000_000_000)
        now = datetime.now(UTC).replace(tzinfo=None)
        params: dict[str, Any] = {"space_id": space_id, "now": now, **dict.fromkeys(SLOTS)}
        for kind, column in PRIMARY_COLUMN.items():
            values = sent.get(kind, [])
            params[column] = values[0] if values else None
            params[f"{kind}_positions"] = list(range(len(values)))
            params[f"{kind}_values"] = values
            params[f"{kind}_normalised"] = [
                "".join(filter(str.isdigit, value)) if kind == "phones" else value.lower()
                for value in values
            ]
        async with pool[0].acquire() as connection:
            row = await connection.fetchrow(
                NEW_CONTACT.sql, *(params[name] for name in NEW_CONTACT.names)
            )
        return 201, orjson.dumps({"id": row[0], **sent})

    return floor


async def key_of(space_id: int) -> str:
    """A new key of the seeded bench Space."""
    db = Database(DATABASE_URL, pool_size=1)
    async with db.writer() as session, session.begin():
        _key, raw_key = await service.create_key(session, space_id, "floor")
    await db.dispose()
    return raw_key


def start_floor(port: int, workers: int, space_id: int) -> "subprocess.Popen[bytes]":
    env = {
        **os.environ,
        "PYTHONPATH": str(BENCH),
        "FLOOR_DATABASE_URL": DATABASE_URL,
        "FLOOR_REDIS_URL": REDIS_URL,
        "FLOOR_SPACE_ID": str(space_id),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "floor:app", "--no-access-log"]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    server = subprocess.Popen(command, env=env)
    wait_until_healthy(server, port)
    return server


def main() -> None:
    import run  # bench/run.py: the bench database, its ceilings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    wrk_path = ensure_wrk()
    space_id = asyncio.run(run.space_of_bench())
    key = asyncio.run(key_of(space_id))
    first, last = 1, 10_000  # the first Space named bench holds the seeded contacts
    directory = BENCH / "results"
    run.ceiling_scripts(space_id, first, last, directory)
    connections = args.workers * 10
    port = free_port()
    summary: dict[str, Any] = {}
    for mode in ("create", "get"):
        rounds: list[dict[str, float]] = []
        for number in range(1, args.rounds + 1):
            print(f"floor: {mode}, round {number}: the app, the floor, the ceiling", flush=True)
            figures: dict[str, float] = {}
            wrk_args = [mode, key, f"f{mode}{number}", "10000", str(first), str(last)]
            for name, start in (
                ("app", lambda: start_server(port, args.workers, REDIS_URL)),
                ("floor", lambda: start_floor(port, args.workers, space_id)),
            ):
                server = start()
                try:
                    workers = workers_of(server.pid)
                    measured = scenario(
                        wrk_path, port, workers, wrk_args, args.seconds, args.connections
                    )
                finally:
                    server.terminate()
                    server.wait(20)
                figures[f"{name}_rps"] = measured["rps"]
                figures[f"{name}_cpu_s_per_1000"] = measured["cpu_s_per_1000"]
            script = directory / f"{mode}.sql"
            figures["ceiling_tps"] = round(run.pgbench(script, connections, args.seconds), 1)
            rounds.append(figures)
            print(f"floor: {figures}", flush=True)
        summary[mode] = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
        for name in ("app", "floor"):
            ratios = [r[f"{name}_rps"] / r["ceiling_tps"] for r in rounds]
            summary[mode][f"{name}_ratio"] = round(statistics.median(ratios), 3)
        summary[mode]["rounds"] = rounds
    (directory / "floor.json").write_text(json.dumps(summary, indent=2))
    for mode, figures in summary.items():
        shown = {name: value for name, value in figures.items() if name != "rounds"}
        print(f"{mode}: {json.dumps(shown)}")


if __name__ == "__main__":
    main()

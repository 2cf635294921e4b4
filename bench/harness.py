"""What every benchmark shares: wrk, a spare port, a key, and a contactbase server to drive."""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from procs import cpu_seconds, peak_rss_mb, wait_until_healthy
from sqlalchemy import text

from contactbase.db import Database
from contactbase.ratelimit import ENDPOINTS
from contactbase.spaces import service

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/contactbase_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
RESULT = re.compile(r"BENCH (.*)")


def ensure_wrk() -> str:
    """The wrk binary, installed from Debian's packages when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: installing wrk (Debian package) ...", flush=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL
    )
    return shutil.which("wrk") or "wrk"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def make_key(url: str = DATABASE_URL) -> str:
    """A key of a new Space named "bench", whose limits are raised out of the way."""
    db = Database(url, pool_size=1)
    async with db.writer() as session, session.begin():
        space = await service.create_space(session, "bench")
        for endpoint in ENDPOINTS:
            await service.set_limit(session, space.id, endpoint, 1_000_000_000)
        _key, raw_key = await service.create_key(session, space.id, "bench")
    await db.dispose()
    return raw_key


def start_server(
    port: int, workers: int = 1, redis_url: str | None = None, database_url: str = DATABASE_URL
) -> "subprocess.Popen[bytes]":
    """contactbase as users run it (`contactbase serve`, settings at their defaults, the access
    log on, written to bench/results/server.log), answering when this returns."""
    env = {
        **os.environ,
        "CONTACTBASE_DATABASE_URL": database_url,
        "CONTACTBASE_EXPORT_POLL_SECONDS": "5",
    }
    env.pop("CONTACTBASE_REDIS_URL", None)
    if redis_url:
        env["CONTACTBASE_REDIS_URL"] = redis_url
    log = ROOT / "bench" / "results" / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "contactbase"), "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers)]
    with log.open("ab") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    wait_until_healthy(server, port)
    return server


def wrk(
    wrk_path: str, port: int, args: list[str], seconds: int, connections: int
) -> dict[str, float]:
    """One wrk run of bench/wrk.lua: requests, latency percentiles (µs) and requests/s."""
    output = subprocess.run(
        [
            wrk_path,
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(ROOT / "bench/wrk.lua"),
            f"http://127.0.0.1:{port}",
            "--",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = RESULT.search(output)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    figures = {
        name: float(value) for name, value in (pair.split("=") for pair in match.group(1).split())
    }
    if figures["non2xx"] or figures["errors"]:
        raise RuntimeError(f"failed requests during the run: {figures}")
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def scenario(
    wrk_path: str, port: int, workers: list[int], args: list[str], seconds: int, connections: int
) -> dict[str, float]:
    """One wrk run (after a short warm-up with other emails) with the workers' CPU time and
    peak memory. args: MODE KEY TAG SEEDED FIRST_ID LAST_ID, as bench/wrk.lua takes them."""
    warm_up = [*args[:2], args[2] + "w", *args[3:]]
    wrk(wrk_path, port, warm_up, 2, connections)
    before = cpu_seconds(workers)
    figures = wrk(wrk_path, port, args, seconds, connections)
    cpu = cpu_seconds(workers) - before
    return {
        "rps": round(figures["rps"], 1),
        "p50_ms": figures["p50_us"] / 1000,
        "p90_ms": figures["p90_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "cpu_s_per_1000": round(cpu / figures["requests"] * 1000, 3),
        "rss_mb_per_worker": round(peak_rss_mb(workers), 1),
    }


VALUE_ROWS = {
    # table: (value, normalised) of the two rows of seeded contact g, as SQL over g
    "contact_emails": [
        ("'seed' || g || '@example.com'", "'seed' || g || '@example.com'"),
        ("'seed' || g || '@example.org'", "'seed' || g || '@example.org'"),
    ],
    "contact_phones": [
        ("'+1 555 ' || lpad(g::text, 7, '0')", "'1555' || lpad(g::text, 7, '0')"),
        ("'+44 20 ' || lpad(g::text, 8, '0')", "'4420' || lpad(g::text, 8, '0')"),
    ],
    "contact_names": [("'Seed ' || g", "'Seed ' || g"), ("'S. ' || g", "'S. ' || g")],
    "contact_locations": [("'City ' || g % 5000", "'City ' || g % 5000"), ("'Earth'", "'Earth'")],
}


async def seed(count: int, url: str = DATABASE_URL) -> tuple[int, int]:
    """Bring the bench Space to `count` contacts shaped like real ones (2 emails, 2 phones, 2
    names, 2 locations, the first of each the primary) with bulk SQL, then ANALYZE; returns the
    first and last seeded ids. Contact g holds seed{g}@example.com."""
    db = Database(url, pool_size=1)
    async with db.writer() as session, session.begin():
        space_id, have = (
            await session.execute(
                text(
                    "SELECT s.id, count(c.id) FROM spaces s "
                    "LEFT JOIN contacts c ON c.space_id = s.id WHERE s.name = 'bench' "
                    "GROUP BY s.id"
                )
            )
        ).one()
        span = {"space": space_id, "start": have + 1, "stop": count}
        series = "generate_series(CAST(:start AS BIGINT), CAST(:stop AS BIGINT)) AS g"
        if have < count:
            await session.execute(
                text(
                    "INSERT INTO contacts (space_id, email, phone, name, location, created_at,"
                    " updated_at) SELECT :space, 'seed' || g || '@example.com',"
                    f" {VALUE_ROWS['contact_phones'][0][0]}, 'Seed ' || g,"
                    f" {VALUE_ROWS['contact_locations'][0][0]}, now(), now() FROM {series}"
                ),
                span,
            )
            for table, rows in VALUE_ROWS.items():
                for position, (value, normalised) in enumerate(rows):
                    await session.execute(
                        text(
                            f"INSERT INTO {table} (space_id, contact_id, position, value,"
                            f" normalised) SELECT c.space_id, c.id, {position}, {value},"
                            f" {normalised} FROM {series}"
                            " JOIN contacts c ON c.space_id = :space"
                            " AND c.email = 'seed' || g || '@example.com'"
                        ),
                        span,
                    )
        await session.execute(text("ANALYZE"))
        first, last = (
            await session.execute(
                text("SELECT min(id), max(id) FROM contacts WHERE space_id = :space"),
                {"space": space_id},
            )
        ).one()
    await db.dispose()
    return int(first), int(last)

"""Create throughput with the Redis rate limiter against in-process counting, side by side.

Runs contactbase on PostgreSQL (one worker), a Space whose limits are raised out of the way, and
wrk posting unique seed-shaped contacts; alternates the two set-ups ROUNDS times and reports
medians and their ratio. Usage: .venv/bin/python bench/limiter.py [--seconds 10] [--rounds 3]
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from contactbase.db import Database
from contactbase.spaces import service

sys.path.insert(0, str(Path(__file__).resolve().parent))
from database import fresh_database

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/contactbase_bench"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
RESULT = re.compile(r"BENCH (.*)")


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: installing wrk (Debian package) ...", flush=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL
    )
    return shutil.which("wrk") or "wrk"


async def make_key() -> str:
    """A key of a new Space whose limits are raised out of the way."""
    db = Database(DATABASE_URL, pool_size=1)
    async with db.writer() as session, session.begin():
        space = await service.create_space(session, "bench")
        for endpoint in ("create", "get", "list", "update", "export"):
            await service.set_limit(session, space.id, endpoint, 1_000_000_000)
        _key, raw_key = await service.create_key(session, space.id, "bench")
    await db.dispose()
    return raw_key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, redis_url: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONTACTBASE_DATABASE_URL": DATABASE_URL}
    env.pop("CONTACTBASE_REDIS_URL", None)
    if redis_url:
        env["CONTACTBASE_REDIS_URL"] = redis_url
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "contactbase.app:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start")


def run_wrk(wrk: str, port: int, key: str, seconds: int, connections: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    output = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(ROOT / "bench/create.lua"),
            f"http://127.0.0.1:{port}",
            "--",
            key,
            tag,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = RESULT.search(output)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    fields = dict(pair.split("=") for pair in match.group(1).split())
    figures = {name: float(value) for name, value in fields.items()}
    if figures["non2xx"] or figures["errors"]:
        raise RuntimeError(f"failed requests during the run: {figures}")
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def measure(wrk: str, key: str, redis_url: str | None, seconds: int) -> dict[str, float]:
    port = free_port()
    server = start_server(port, redis_url)
    try:
        run_wrk(wrk, port, key, 2, 16)  # warm-up: connections, prepared statements, caches
        return run_wrk(wrk, port, key, seconds, 16)
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    wrk = ensure_wrk()
    fresh_database(DATABASE_URL)
    key = asyncio.run(make_key())
    runs: dict[str, list[dict[str, float]]] = {"redis": [], "memory": []}
    setups = [("redis", REDIS_URL), ("memory", None)]
    for round_number in range(1, args.rounds + 1):
        # Alternate which goes first, so that drift on a shared machine cancels out.
        for name, redis_url in setups if round_number % 2 else setups[::-1]:
            figures = measure(wrk, key, redis_url, args.seconds)
            runs[name].append(figures)
            print(
                f"round {round_number} {name:6}: {figures['rps']:7.1f} creates/s, "
                f"p99 {figures['p99_us'] / 1000:.1f} ms",
                flush=True,
            )
    median = {name: statistics.median(r["rps"] for r in results) for name, results in runs.items()}
    ratios = [r["rps"] / m["rps"] for r, m in zip(runs["redis"], runs["memory"], strict=True)]
    ratio = statistics.median(ratios)
    print(
        f"median creates/s: redis limiter {median['redis']:.1f}, "
        f"in-process counting {median['memory']:.1f}; median of the rounds' ratios "
        f"{ratio:.3f} (target >= 0.9)"
    )
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "limiter.json").write_text(
        json.dumps(
            {
                "create_rps_redis_limiter": median["redis"],
                "create_rps_memory_limiter": median["memory"],
                "ratio": ratio,
                "round_ratios": ratios,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

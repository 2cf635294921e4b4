"""What every benchmark shares: wrk, a spare port, a key, and a contactbase server to drive."""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from procs import wait_until_healthy

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

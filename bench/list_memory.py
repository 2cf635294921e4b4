"""Peak memory of a served worker under 15 slow list requests at once (issue 16, finding 1).

A fresh PostgreSQL database, migrated, one Space and key made with the CLI, CONTACTS contacts
(harness.seed) whose 15 text slots are each full (10,240 characters of varied text). Then
`contactbase serve` with one worker and Redis, the rest at defaults: the worker's idle RSS, then
READERS requests at once of GET /contacts?per_page=5000&include_custom_fields=1, each read slowly
(64 KiB every 50 ms) and fully, while the worker's VmRSS is sampled and GET /contacts/{id} is
timed, to show the database pool is free while the answers go out. Peak is the worker's VmHWM
(reset after the warm-up). Then the same with the page cap at 64 MiB, to show the cap is what
bounds memory. Usage: .venv/bin/python bench/list_memory.py [--contacts 5000] [--readers 15]
[--high-cap-mib 64 (0: skip)] [--database URL] (default: contactbase_bench_list, recreated).
"""

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from database import fresh_database
from harness import REDIS_URL, free_port, seed, start_server
from procs import workers_of
from sqlalchemy import text

from contactbase.contacts.custom_fields import MAX_CUSTOM_TEXT
from contactbase.db import Database

TARGET_MB = 300
LIST = "/public-api/v1/contacts?per_page=5000&include_custom_fields=1"
CAP = "CONTACTBASE_MAX_RESPONSE_BYTES"
MB = 1_000_000


def cli(url: str, *args: str) -> Any:
    """A `contactbase ... --json` command on the database: its JSON."""
    command = [str(Path(sys.executable).parent / "contactbase"), *args, "--json"]
    env = {**os.environ, "CONTACTBASE_DATABASE_URL": url}
    return json.loads(subprocess.run(command, env=env, check=True, capture_output=True).stdout)


async def fill_slots(url: str) -> None:
    """Every contact's 15 text slots full: windows at different offsets of one random text, so
    no two values are alike and none is a run of one character."""
    alphabet = string.ascii_letters + string.digits + " .,"
    base = "".join(random.Random(16).choices(alphabet, k=2 * MAX_CUSTOM_TEXT))
    slots = ", ".join(
        f"profile_field_{n} = substr(CAST(:base AS TEXT), "
        f"CAST(1 + (id * 15 + {n}) * 37 % {MAX_CUSTOM_TEXT} AS INT), {MAX_CUSTOM_TEXT})"
        for n in range(1, 16)
    )
    db = Database(url, pool_size=1)
    async with db.writer() as session, session.begin():
        await session.execute(text(f"UPDATE contacts SET {slots}"), {"base": base})
    await db.dispose()


def status_kb(pid: int, field: str) -> int:
    """A VmRSS / VmHWM figure of the process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def slow_read(port: int, key: str, pace: float, answer: dict[str, Any]) -> None:
    """The list read as a slow client reads it, into `answer`. The small receive buffer keeps
    the kernel from taking the answer off the server at once, as it would on loopback."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            f"GET {LIST} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        received = bytearray()
        while chunk := sock.recv(64 * 1024):
            received += chunk
            answer.setdefault("first_byte_at", time.perf_counter())
            time.sleep(pace)
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head[:300].decode())
    page = orjson.loads(body)
    answer.update(bytes=len(body), contacts=len(page["data"]), more=bool(page["next_cursor"]))


def measure(url: str, redis_url: str, key: str, probe_id: int, readers: int, pace: float) -> Any:
    """One served worker under READERS slow list requests: its memory, the answers, probes."""
    port = free_port()
    server = start_server(port, 1, redis_url, url)
    try:
        (pid,) = workers_of(server.pid)
        base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
            for path in (LIST.replace("5000", "1"), f"/public-api/v1/contacts/{probe_id}"):
                client.get(path).raise_for_status()  # warm: imports, statements, the key
            idle = status_kb(pid, "VmRSS")
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM restarts from VmRSS
            answers: list[dict[str, Any]] = [{} for _ in range(readers)]
            threads = [
                threading.Thread(target=slow_read, args=(port, key, pace, answer))
                for answer in answers
            ]
            sampled, probes, began = [idle], [], time.perf_counter()
            for thread in threads:
                thread.start()
            next_probe = began + 0.5
            while any(thread.is_alive() for thread in threads):
                sampled.append(status_kb(pid, "VmRSS"))
                if time.perf_counter() >= next_probe:
                    sent = time.perf_counter()
                    client.get(f"/public-api/v1/contacts/{probe_id}").raise_for_status()
                    probes.append((sent, time.perf_counter() - sent))
                    next_probe = time.perf_counter() + 0.5
                time.sleep(0.003)
            seconds = time.perf_counter() - began
            peak = status_kb(pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(20)
    if len(answers) != sum("bytes" in answer for answer in answers):
        raise SystemExit("a reader failed (see its traceback above)")
    # Once every reader has its first byte, every list request has given its connection back.
    released = max(answer["first_byte_at"] for answer in answers)
    reading = [round(latency * 1000, 1) for sent, latency in probes if sent > released]
    return {
        "idle_mb": idle * 1024 / MB,
        "peak_mb": peak * 1024 / MB,
        "sampled_peak_mb": max(sampled) * 1024 / MB,
        "growth_mb": (peak - idle) * 1024 / MB,
        "answer_bytes": sorted({answer["bytes"] for answer in answers}),
        "contacts_per_page": sorted({answer["contacts"] for answer in answers}),
        "all_have_next_cursor": all(answer["more"] for answer in answers),
        "first_byte_s_max": released - began,
        "seconds": seconds,
        "samples": len(sampled),
        "probe_ms_before": [
            round(latency * 1000, 1) for sent, latency in probes if sent <= released
        ],
        "probe_ms_median": statistics.median(reading) if reading else None,
        "probe_ms_max": max(reading, default=None),
        "probes": len(reading),
    }


def run(url: str, redis_url: str, contacts: int, readers: int, pace: float, caps: list[int]) -> Any:
    """The database made and seeded, then one measure per page cap (0: the default cap)."""
    fresh_database(url)
    space = cli(url, "space", "create", "bench")["id"]
    for endpoint in ("list", "get"):  # out of the way of the runs
        cli(url, "space", "set-limit", str(space), endpoint, "1000000")
    key = cli(url, "key", "create", str(space))["key"]
    first, _last = asyncio.run(seed(contacts, url))
    asyncio.run(fill_slots(url))
    figures = {}
    for cap in caps:
        os.environ.pop(CAP, None)
        if cap:
            os.environ[CAP] = str(cap)
        figures[cap] = measure(url, redis_url, key, first, readers, pace)
    os.environ.pop(CAP, None)
    return figures


def report(cap: int, figures: dict[str, Any], readers: int) -> str:
    """The run's figures as a few lines."""
    name = f"{CAP}={cap}" if cap else "the default page cap"
    return (
        f"{readers} slow readers, {name}: {figures['seconds']:.1f} s "
        f"(first byte by {figures['first_byte_s_max']:.1f} s)\n"
        f"  answers: {figures['answer_bytes']} bytes, {figures['contacts_per_page']} contacts "
        f"per page, next_cursor on all: {figures['all_have_next_cursor']}\n"
        f"  worker RSS: idle {figures['idle_mb']:.1f} MB, peak (VmHWM) {figures['peak_mb']:.1f} "
        f"MB (sampled {figures['sampled_peak_mb']:.1f} MB over {figures['samples']} samples), "
        f"growth {figures['growth_mb']:.1f} MB\n"
        f"  GET /contacts/{{id}} once every reader had its first byte: {figures['probes']} "
        f"probes, median {figures['probe_ms_median']} ms, max {figures['probe_ms_max']} ms; "
        f"before: {figures['probe_ms_before']} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=5000)
    parser.add_argument("--readers", type=int, default=15)
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between 64 KiB reads")
    parser.add_argument("--high-cap-mib", type=int, default=64)
    parser.add_argument(
        "--database", default="postgresql://postgres@127.0.0.1:5432/contactbase_bench_list"
    )
    args = parser.parse_args()
    caps = [0] + ([args.high_cap_mib * 1024 * 1024] if args.high_cap_mib else [])
    figures = run(args.database, REDIS_URL, args.contacts, args.readers, args.pace, caps)
    for cap, found in figures.items():
        print(report(cap, found, args.readers), flush=True)
    peak = figures[0]["peak_mb"]
    verdict = "PASS" if peak < TARGET_MB else "FAIL"
    print(f"{verdict}: peak {peak:.1f} MB with the default cap (target < {TARGET_MB} MB)")
    if verdict == "FAIL":
        raise SystemExit(1)


if __name__ == "__main__":
    main()

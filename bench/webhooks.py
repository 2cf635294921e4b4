"""Webhook delivery throughput for `make bench`: events delivered per second to a local receiver
that answers at once (PostgreSQL).

`contactbase serve --workers 2` as the other scenarios serve it (the Redis limiter, settings at
their defaults) but with CONTACTBASE_WEBHOOK_ALLOW_PRIVATE=true, the receiver being on 127.0.0.1;
a fresh database. The receiver, a process of its own so that it is never the bottleneck, is a
bare asyncio HTTP/1.1 server with keep-alive: 200 and an empty body, and a note of when each
message arrived. A round creates EVENTS contacts through POST /contacts/batch, 1,000 a batch one
after the other (each one `contact.created` event, a message per endpoint), and waits for every
message. Its figures: messages and events per second from the first message received to the
last; the server processes' CPU per event from the first batch to the last message, the creates
included (a round before any endpoint gives theirs, `create_cpu_ms_per_event`); the lag from a
batch's answer to the last of its messages (median and worst). Rounds with one endpoint, then
with four (a quarter of the events: as many messages); medians of the rounds.

    .venv/bin/python bench/webhooks.py --events 5000 --rounds 3
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import orjson
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import BATCH, PATH, new_item
from database import fresh_database
from harness import DATABASE_URL, REDIS_URL, free_port, make_key, start_server
from procs import cpu_seconds, wait_until_healthy, workers_of

from contactbase.db import Database
from contactbase.webhooks.service import create_endpoint

QUIET_SECONDS = 60  # this long without a message, while some are missing, fails the round
Note = tuple[float, str, int]  # when a message arrived, its path, its contact's id


def receive(port: int) -> None:
    """The receiver: 200 with an empty body to every POST, noting its arrival; a GET answers
    the notes taken since the last GET, as JSON."""
    notes: list[Note] = []

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request, *lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
                fields = (line.partition(b":") for line in lines)
                length = sum(int(v) for name, _, v in fields if name.lower() == b"content-length")
                body = await reader.readexactly(length)
                answer = b""
                if request.startswith(b"GET"):
                    answer = orjson.dumps(notes)
                    notes.clear()
                else:
                    contact_id = orjson.loads(body)["data"]["contact_id"]
                    notes.append((time.time(), request.split()[1].decode(), contact_id))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(answer))
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    asyncio.run(serve())


@dataclass(frozen=True)
class Served:
    port: int
    key: str
    workers: list[int]
    receiver_port: int
    receiver_pid: int


@contextmanager
def serving(url: str, redis_url: str) -> Iterator[Served]:
    """The receiver and a server on a fresh database whose bench Space has the key."""
    fresh_database(url)
    key = asyncio.run(make_key(url))
    receiver_port, port = free_port(), free_port()
    receiver = subprocess.Popen([sys.executable, __file__, "--receive", str(receiver_port)])
    try:
        wait_until_healthy(receiver, receiver_port)
        with mock.patch.dict(os.environ, {"CONTACTBASE_WEBHOOK_ALLOW_PRIVATE": "true"}):
            server = start_server(port, 2, redis_url, url)
        try:
            yield Served(port, key, workers_of(server.pid), receiver_port, receiver.pid)
        finally:
            server.terminate()
            server.wait(20)
    finally:
        receiver.terminate()
        receiver.wait(10)


async def add_endpoints(url: str, count: int, receiver: str) -> list[str]:
    """`count` more endpoints of the bench Space, each at a path of its own on the receiver;
    the paths of all its endpoints."""
    db = Database(url, pool_size=1)
    async with db.writer() as session, session.begin():
        space_id = int(await session.scalar(text("SELECT id FROM spaces WHERE name = 'bench'")))
        have = int(await session.scalar(text("SELECT count(*) FROM webhook_endpoints")))
        for n in range(have, have + count):
            await create_endpoint(session, space_id, f"{receiver}/e{n}", allow_private=True)
    await db.dispose()
    return [f"/e{n}" for n in range(have + count)]


async def send(port: int, key: str, tag: str, events: int) -> list[tuple[float, list[int]]]:
    """`events` new contacts, in batches of up to 1,000 one after the other (bodies built
    first); for each batch, when it was answered and its contacts' ids."""
    items = [new_item(f"{tag}-{n}") for n in range(events)]
    bodies = [orjson.dumps({"contacts": items[i : i + BATCH]}) for i in range(0, events, BATCH)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    answered = []
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120
    ) as client:
        for body in bodies:
            response = await client.post(PATH, content=body)
            answer = response.json()
            if response.status_code != 200 or answer["merged"] or answer["failed"]:
                raise RuntimeError(f"batch answered {response.status_code}: {response.text[:300]}")
            answered.append((time.time(), [item["contact"]["id"] for item in answer["results"]]))
    return answered


def collect(receiver_port: int, expected: set[tuple[str, int]]) -> list[Note]:
    """The receiver's notes until every expected (path, contact id) has arrived."""
    notes: list[Note] = []
    missing = set(expected)
    quiet_since = time.monotonic()
    while missing:
        taken = orjson.loads(httpx.get(f"http://127.0.0.1:{receiver_port}/").content)
        notes += [(at, path, contact_id) for at, path, contact_id in taken]
        missing.difference_update((path, contact_id) for _, path, contact_id in taken)
        if taken:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > QUIET_SECONDS:
            raise RuntimeError(f"{len(missing)} of {len(expected)} messages never arrived")
        time.sleep(0.2)
    return notes


def one_round(served: Served, paths: list[str], events: int, tag: str) -> dict[str, Any]:
    """A round of `events` events to the endpoints at `paths`: the figures told at the top."""
    before = cpu_seconds(served.workers), cpu_seconds([served.receiver_pid])
    answered = asyncio.run(send(served.port, served.key, tag, events))
    expected = {(path, i) for _, ids in answered for i in ids for path in paths}
    notes = collect(served.receiver_port, expected)
    cpu = cpu_seconds(served.workers) - before[0]
    figures: dict[str, Any] = {"cpu_ms_per_event": round(cpu / events * 1000, 3)}
    if not paths:
        return figures
    last: dict[int, float] = {}
    for at, _path, contact_id in notes:
        last[contact_id] = max(at, last.get(contact_id, at))
    lags = [max(last[i] for i in ids) - at for at, ids in answered]
    span = max(max(note[0] for note in notes) - min(note[0] for note in notes), 1e-3)
    receiver_cpu = cpu_seconds([served.receiver_pid]) - before[1]
    return figures | {
        "events_per_s": round(events / span, 1),
        "messages_per_s": round(len(notes) / span, 1),
        "lag_s_p50": round(statistics.median(lags), 3),
        "lag_s_max": round(max(lags), 3),
        "duplicates": len(notes) - len(expected),
        "seconds": round(span, 2),
        "receiver_cpu_ms_per_message": round(receiver_cpu / len(notes) * 1000, 3),
    }


def scenarios(
    events: int, rounds: int, url: str = DATABASE_URL + "_webhooks", redis_url: str = REDIS_URL
) -> dict[str, Any]:
    """The creates alone, then `rounds` rounds of `events` events with one endpoint and of a
    quarter as many with four (as many messages): the same server, Space and receiver."""
    results: dict[str, Any] = {"events": events, "rounds": rounds}
    with serving(url, redis_url) as served:
        print("bench: webhooks, the creates alone (no endpoint) ...", flush=True)
        base = one_round(served, [], events, "w0")["cpu_ms_per_event"]
        results["create_cpu_ms_per_event"] = base
        paths: list[str] = []
        for endpoints in (1, 4):
            receiver = f"http://127.0.0.1:{served.receiver_port}"
            paths = asyncio.run(add_endpoints(url, endpoints - len(paths), receiver))
            time.sleep(2)  # the workers number the events of the rounds before: not timed
            runs = []
            for number in range(1, rounds + 1):
                print(f"bench: webhooks, {endpoints} endpoint(s), round {number} ...", flush=True)
                tag = f"w{endpoints}-{number}"
                runs.append(one_round(served, paths, events // endpoints, tag))
                print(f"bench: {runs[-1]}", flush=True)
            median = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
            delivery = (median["cpu_ms_per_event"] - base) / endpoints
            results[f"endpoints_{endpoints}"] = {
                "events": events // endpoints,
                **median,
                "delivery_cpu_ms_per_message": round(delivery, 3),
                "rounds_events_per_s": [run["events_per_s"] for run in runs],
            }
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)  # the receiver's port
    args = parser.parse_args()
    if args.receive:
        receive(args.receive)
    else:
        print(json.dumps(scenarios(args.events, args.rounds), indent=2))

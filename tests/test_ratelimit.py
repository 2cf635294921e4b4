"""Per-Space, per-endpoint limits, in memory and in a real Redis."""

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis

from contactbase.app import close, create_app
from contactbase.db import Database
from contactbase.ratelimit import mark_change
from contactbase.settings import Settings
from contactbase.spaces import service
from tests.factories import CONTACTS, bearer, make_key, make_space

DEFAULTS: dict[str, int] = {}


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The Redis URL to count in, or None for memory; Redis starts empty."""
    if request.param == "memory":
        return None
    url: str = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    return url


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        await close(app)


async def set_limit(
    db: Database, backend: str | None, space_id: int, endpoint: str, per_minute: int
) -> None:
    """As `contactbase space set-limit` does it: saved, then announced to the servers."""
    async with db.writer() as session, session.begin():
        await service.set_limit(session, space_id, endpoint, per_minute)
    if backend is not None:
        await mark_change(backend)


def new_contact(n: int) -> dict[str, list[str]]:
    return {"emails": [f"person{n}@example.com"]}


async def test_sixty_creates_then_429_with_headers(
    settings: Settings, db: Database, backend: str | None
) -> None:
    auth = bearer(await make_key(db, await make_space(db, limits=DEFAULTS)))
    async with serving(settings.model_copy(update={"redis_url": backend})) as client:
        remaining = []
        for n in range(60):
            response = await client.post(CONTACTS, json=new_contact(n), headers=auth)
            assert response.status_code == 201
            assert response.headers["X-RateLimit-Limit"] == "60"
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert remaining == list(range(59, -1, -1))
        refused = await client.post(CONTACTS, json=new_contact(60), headers=auth)
    assert refused.status_code == 429
    assert refused.json()["message"].startswith("Too many create requests")
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Policy"] == '"create";q=60;w=60'
    assert refused.headers["RateLimit"].startswith('"create";r=0;t=')


async def test_each_endpoint_and_space_has_its_own_bucket(
    settings: Settings, db: Database, backend: str | None
) -> None:
    space_a = await make_space(db, "A", limits={"create": 1})
    space_b = await make_space(db, "B", limits={"create": 1})
    a, b = bearer(await make_key(db, space_a)), bearer(await make_key(db, space_b))
    async with serving(settings.model_copy(update={"redis_url": backend})) as client:
        assert (await client.post(CONTACTS, json=new_contact(1), headers=a)).status_code == 201
        assert (await client.post(CONTACTS, json=new_contact(2), headers=a)).status_code == 429
        got = await client.get(f"{CONTACTS}/1", headers=a)
        assert got.status_code == 200
        assert got.headers["X-RateLimit-Limit"] == "30"
        assert got.headers["X-RateLimit-Remaining"] == "29"
        listed = await client.get(CONTACTS, headers=a)
        assert listed.headers["X-RateLimit-Limit"] == "15"
        assert (await client.post(CONTACTS, json=new_contact(3), headers=b)).status_code == 201


async def test_an_override_lowers_and_raises_the_limit_at_once(
    settings: Settings, db: Database, backend: str | None
) -> None:
    space_id = await make_space(db, limits={"get": 3})
    auth = bearer(await make_key(db, space_id))
    async with serving(settings.model_copy(update={"redis_url": backend})) as client:
        statuses = [(await client.get(f"{CONTACTS}/1", headers=auth)).status_code for _ in range(4)]
        assert statuses == [404, 404, 404, 429]
        await set_limit(db, backend, space_id, "get", 5)
        raised = [(await client.get(f"{CONTACTS}/1", headers=auth)) for _ in range(3)]
        assert [r.status_code for r in raised] == [404, 404, 429]
        assert raised[0].headers["X-RateLimit-Limit"] == "5"
        await set_limit(db, backend, space_id, "get", 1)
        assert (await client.get(f"{CONTACTS}/1", headers=auth)).status_code == 429


async def test_retry_after_is_honest(settings: Settings, db: Database, backend: str | None) -> None:
    auth = bearer(await make_key(db, await make_space(db, limits={"get": 1})))
    short = settings.model_copy(update={"redis_url": backend, "rate_limit_window_seconds": 2})
    async with serving(short) as client:
        assert (await client.get(f"{CONTACTS}/1", headers=auth)).status_code == 404
        refused = await client.get(f"{CONTACTS}/1", headers=auth)
        assert refused.status_code == 429
        assert refused.headers["RateLimit-Policy"] == '"get";q=1;w=2'
        retry_after = int(refused.headers["Retry-After"])
        assert retry_after in (1, 2)
        await asyncio.sleep(retry_after)
        assert (await client.get(f"{CONTACTS}/1", headers=auth)).status_code == 404


async def test_refused_before_the_limit_step_is_not_counted(
    settings: Settings, db: Database, backend: str | None
) -> None:
    space_id = await make_space(db, limits={"create": 5})
    auth = bearer(await make_key(db, space_id))
    reader = bearer(await make_key(db, space_id, ["contacts:read"]))
    async with serving(settings.model_copy(update={"redis_url": backend})) as client:
        assert (await client.post(CONTACTS, json=new_contact(1))).status_code == 401
        assert (await client.post(CONTACTS, json=new_contact(1), headers=reader)).status_code == 403
        invalid = await client.post(CONTACTS, json={"emails": []}, headers=auth)
        assert invalid.status_code == 422
        assert invalid.headers["X-RateLimit-Remaining"] == "4"  # a 422 counts
        created = await client.post(CONTACTS, json=new_contact(1), headers=auth)
        assert created.headers["X-RateLimit-Remaining"] == "3"


async def test_200_concurrent_requests_admit_exactly_60(
    settings: Settings, db: Database, backend: str | None
) -> None:
    auth = bearer(await make_key(db, await make_space(db, limits={"get": 60})))
    async with serving(settings.model_copy(update={"redis_url": backend})) as client:
        responses = await asyncio.gather(
            *(client.get(f"{CONTACTS}/1", headers=auth) for _ in range(200))
        )
    statuses = [response.status_code for response in responses]
    assert statuses.count(404) == 60
    assert statuses.count(429) == 140


async def test_a_limit_of_one_refuses_alike_in_memory_and_redis(
    settings: Settings, db: Database, backend: str | None
) -> None:
    """The smallest limit a Space may have (a limit of 0 is refused: set-limit)."""
    auth = bearer(await make_key(db, await make_space(db, limits={"get": 1})))
    async with serving(settings.model_copy(update={"redis_url": backend})) as client:
        counted = await client.get(f"{CONTACTS}/1", headers=auth)
        refused = await client.get(f"{CONTACTS}/1", headers=auth)
    assert counted.status_code == 404
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start_redis(port: int, directory: Path) -> "subprocess.Popen[bytes]":
    """A Redis server of the test's own on `port`, answering when this returns."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    command = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return process
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def dedicated_redis(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A Redis server of this test's own, on a spare port."""
    port = free_port()
    process = start_redis(port, tmp_path)
    yield f"redis://127.0.0.1:{port}/0", port
    process.terminate()
    process.wait(10)


async def test_a_redis_outage_fails_open_and_limits_resume(
    settings: Settings, db: Database, dedicated_redis: tuple[str, int], tmp_path: Path
) -> None:
    url, port = dedicated_redis
    auth = bearer(await make_key(db, await make_space(db, limits={"get": 2})))
    async with serving(settings.model_copy(update={"redis_url": url})) as client:
        statuses = [(await client.get(f"{CONTACTS}/1", headers=auth)).status_code for _ in range(3)]
        assert statuses == [404, 404, 429]
        redis.Redis.from_url(url).shutdown(nosave=True)
        during = [(await client.get(f"{CONTACTS}/1", headers=auth)) for _ in range(5)]
        assert [r.status_code for r in during] == [404] * 5
        assert "X-RateLimit-Remaining" not in during[0].headers
        metrics = (await client.get("/metrics")).text
        assert "contactbase_ratelimit_unlimited_total 5.0" in metrics
        restarted = start_redis(port, tmp_path)
        try:
            await asyncio.sleep(1.5)  # the limiter retries Redis a second after it failed
            after = [
                (await client.get(f"{CONTACTS}/1", headers=auth)).status_code for _ in range(3)
            ]
            assert after == [404, 404, 429]
        finally:
            restarted.terminate()
            restarted.wait(10)


@pytest.fixture
def two_servers(database_url: str, redis_url: str, db: Database) -> Iterator[list[str]]:
    """Two contactbase processes on different ports, sharing the database and one Redis."""
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        **os.environ,
        "CONTACTBASE_DATABASE_URL": database_url,
        "CONTACTBASE_REDIS_URL": redis_url,
    }
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "contactbase", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_until_up(f"http://127.0.0.1:{port}/healthz")
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


async def test_two_processes_sharing_redis_enforce_one_limit(
    db: Database, two_servers: list[str]
) -> None:
    auth = bearer(await make_key(db, await make_space(db, limits=DEFAULTS)))
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(60):
            url = two_servers[n % 2] + CONTACTS
            assert (await client.post(url, json=new_contact(n), headers=auth)).status_code == 201
        for base in two_servers:
            refused = await client.post(base + CONTACTS, json=new_contact(99), headers=auth)
            assert refused.status_code == 429

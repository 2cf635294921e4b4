"""Keys are cached by each server process (spaces/keycache.py), and every administrative change
made with the CLI still applies to the next request, on every worker (SPEC section 1): on
SQLite through the readers' `PRAGMA data_version`, on PostgreSQL through the mark the CLI moves
in Redis, read back with each request's rate-limit count."""

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis

from contactbase.app import close, create_app
from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.spaces import service
from tests.factories import CONTACTS, bearer, make_key, make_space
from tests.spaces.test_auth import make_key_with_id
from tests.test_ratelimit import free_port, wait_until_up

CONNECTIONS = 16  # kept open, each served by one worker throughout


def contactbase(env: dict[str, str], *args: str) -> None:
    """The command as an operator runs it, in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "contactbase", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def server_env(
    database_url: str, is_postgres: bool, request: pytest.FixtureRequest
) -> dict[str, str]:
    if not is_postgres:
        pytest.skip("several workers share Redis on PostgreSQL; the SQLite pass tests one")
    redis_url: str = request.getfixturevalue("redis_url")
    redis.Redis.from_url(redis_url).flushdb()
    return {
        **os.environ,
        "CONTACTBASE_DATABASE_URL": database_url,
        "CONTACTBASE_REDIS_URL": redis_url,
        "CONTACTBASE_ACCESS_LOG": "false",
    }


@pytest.fixture
def two_workers(server_env: dict[str, str], db: Database) -> Iterator[str]:
    """`contactbase serve --workers 2`, as users run it with Redis."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "contactbase", "serve", "--port", str(port), "--workers", "2"],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(20)


async def statuses(clients: list[httpx.AsyncClient], auth: dict[str, str]) -> list[int]:
    responses = await asyncio.gather(*(client.get(CONTACTS, headers=auth) for client in clients))
    return [response.status_code for response in responses]


async def test_a_key_revoked_with_the_cli_is_refused_by_every_worker(
    db: Database, two_workers: str, server_env: dict[str, str]
) -> None:
    space_id = await make_space(db)
    key_id, key = await make_key_with_id(db, space_id)
    auth = bearer(key)
    clients = [
        httpx.AsyncClient(base_url=two_workers, limits=httpx.Limits(max_connections=1))
        for _ in range(CONNECTIONS)
    ]
    try:
        assert await statuses(clients, auth) == [200] * CONNECTIONS
        # Revoked behind the servers' back (no announcement): they answer from their caches,
        # which shows the caches in use.
        async with db.writer() as session, session.begin():
            await service.revoke_key(session, key_id)
        assert await statuses(clients, auth) == [200] * CONNECTIONS
        contactbase(server_env, "key", "revoke", str(key_id))
        assert await statuses(clients, auth) == [401] * CONNECTIONS
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
async def caching_client(
    settings: Settings, is_postgres: bool, db: Database, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """An app whose key cache is on: SQLite's always is; PostgreSQL's with Redis. And the
    environment the CLI runs in, the same as the app's."""
    if is_postgres:
        url: str = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        settings = settings.model_copy(update={"redis_url": url})
    env = {**os.environ, "CONTACTBASE_DATABASE_URL": settings.database_url}
    if settings.redis_url:
        env["CONTACTBASE_REDIS_URL"] = settings.redis_url
    else:
        env.pop("CONTACTBASE_REDIS_URL", None)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, env
    await close(app)


async def test_every_change_with_the_cli_applies_to_the_next_request(
    db: Database, caching_client: tuple[httpx.AsyncClient, dict[str, str]]
) -> None:
    client, env = caching_client
    space_id = await make_space(db, limits={"get": 100})
    auth = bearer(await make_key(db, space_id))
    one = f"{CONTACTS}/1"

    async def run(*args: str) -> None:
        await asyncio.to_thread(contactbase, env, *args)

    assert (await client.get(one, headers=auth)).headers["X-RateLimit-Limit"] == "100"
    await run("space", "set-limit", str(space_id), "get", "50")
    assert (await client.get(one, headers=auth)).headers["X-RateLimit-Limit"] == "50"
    await run("space", "deactivate", str(space_id))
    assert (await client.get(one, headers=auth)).status_code == 403
    await run("space", "activate", str(space_id))
    assert (await client.get(one, headers=auth)).status_code == 404
    other_id, other = await make_key_with_id(db, space_id)
    assert (await client.get(one, headers=bearer(other))).status_code == 404
    await run("key", "revoke", str(other_id))
    assert (await client.get(one, headers=bearer(other))).status_code == 401
    assert (await client.get(one, headers=auth)).status_code == 404

"""`serve --limit-concurrency N` (SPEC 6.8): beyond N requests in progress in a worker,
contactbase's own outer middleware answers 503 with SPEC 6.1's JSON, code `overloaded`, and
`Retry-After: 1`; /healthz, /readyz and /metrics are never refused. First on RequestContext
around an app whose requests wait for the test's word, then on a real `contactbase serve`."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from contactbase.metrics import Metrics
from contactbase.middleware import RequestContext
from tests.factories import CONTACTS, bearer
from tests.test_headers import Served, contactbase, contactbase_serve

OVERLOADED = "The server is answering as many requests as it is allowed to; retry in a second."
OPERATIONS = ("/healthz", "/readyz", "/metrics")


def assert_overloaded(status: int, headers: Mapping[str, str], body: bytes) -> None:
    assert status == 503, body
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "message": OVERLOADED,
        "code": "overloaded",
        "request_id": headers["x-request-id"],
    }


class Held:
    """An app whose requests to /held wait until the test releases them; /boom fails; any other
    path answers 200 at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/held":
            self.waiting += 1
            await self.release.wait()
            self.waiting -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    async def until_waiting(self, count: int) -> None:
        for _ in range(1000):
            if self.waiting == count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{self.waiting} requests waiting, not {count}")


def over_asgi(app: RequestContext) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
def held() -> Held:
    return Held()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def limited(held: Held, metrics: Metrics) -> AsyncIterator[httpx.AsyncClient]:
    """A client of RequestContext with a limit of 2 requests in progress."""
    app = RequestContext(held, max_body_bytes=1024, metrics=metrics, limit_concurrency=2)
    async with over_asgi(app) as client:
        yield client


async def test_beyond_the_limit_a_503_overloaded_until_requests_finish(
    limited: httpx.AsyncClient, held: Held, metrics: Metrics
) -> None:
    holding = [asyncio.create_task(limited.get("/held")) for _ in range(2)]
    await held.until_waiting(2)
    refused = await limited.get("/other", headers={"X-Request-Id": "mine"})
    assert_overloaded(refused.status_code, refused.headers, refused.content)
    assert refused.headers["x-request-id"] == "mine"
    for path in OPERATIONS:
        assert (await limited.get(path)).status_code == 200
    over = await limited.get("/other", headers={"X-Pad": "p" * 65_536})
    assert over.status_code == 431  # the header limit comes first
    held.release.set()
    assert [(await answer).status_code for answer in holding] == [200, 200]
    after = await asyncio.gather(*(limited.get("/other") for _ in range(2)))
    assert [response.status_code for response in after] == [200, 200]
    refusals = {"method": "GET", "route": "unmatched", "status": "503"}
    assert metrics.registry.get_sample_value("contactbase_requests_total", refusals) == 1.0


async def test_a_slow_upload_holds_its_place(held: Held, metrics: Metrics) -> None:
    app = RequestContext(held, max_body_bytes=1024, metrics=metrics, limit_concurrency=1)
    arrived = asyncio.Event()
    rest = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield b"{"
        arrived.set()
        await rest.wait()
        yield b"}"

    async with over_asgi(app) as client:
        upload = asyncio.create_task(client.post("/other", content=slowly()))
        await arrived.wait()
        refused = await client.get("/other")
        assert_overloaded(refused.status_code, refused.headers, refused.content)
        rest.set()
        assert (await upload).status_code == 200
        assert (await client.get("/other")).status_code == 200


async def test_every_way_a_request_ends_gives_its_place_back(held: Held, metrics: Metrics) -> None:
    app = RequestContext(held, max_body_bytes=4, metrics=metrics, limit_concurrency=1)
    async with over_asgi(app) as client:
        assert (await client.get("/boom")).status_code == 500
        assert (await client.post("/other", content=b"too long")).status_code == 413
        assert (await client.get("/other")).status_code == 200

        async def gone() -> Message:
            return {"type": "http.disconnect"}

        async def unheard(message: Message) -> None:
            raise AssertionError(f"an answer to a client that left: {message}")

        scope = {"type": "http", "method": "POST", "path": "/other", "headers": []}
        await app(scope, gone, unheard)  # the client left before its body arrived
        assert app.in_progress == 0
        assert (await client.get("/other")).status_code == 200


async def test_no_limit_by_default(held: Held, metrics: Metrics) -> None:
    app = RequestContext(held, max_body_bytes=1024, metrics=metrics)
    async with over_asgi(app) as client:
        holding = [asyncio.create_task(client.get("/held")) for _ in range(50)]
        await held.until_waiting(50)
        assert (await client.get("/other")).status_code == 200
        held.release.set()
        assert {(await answer).status_code for answer in holding} == {200}


@pytest.fixture
def served_with_a_limit(tmp_path: Path) -> Iterator[Served]:
    with contactbase_serve(tmp_path, "--limit-concurrency", "2") as server:
        yield server


async def raw(port: int, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    return reader, writer


async def test_a_running_server_answers_overloaded_beyond_its_limit(
    served_with_a_limit: Served,
) -> None:
    """Two uploads that stop halfway hold the two places; the next request is refused until
    they are done, the operations endpoints never."""
    server = served_with_a_limit
    space = contactbase(server.env, "space", "create", "Overload")
    auth = bearer(contactbase(server.env, "key", "create", str(space["id"]))["key"])
    halfway = (
        f"POST {CONTACTS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: 2\r\nConnection: close\r\n\r\n{{"
    ).encode()
    uploads = [await raw(server.port, halfway) for _ in range(2)]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            for _ in range(100):  # until the server has begun both uploads (401 until then)
                refused = await client.get(CONTACTS)
                if refused.status_code == 503:
                    break
                await asyncio.sleep(0.05)
            assert_overloaded(refused.status_code, refused.headers, refused.content)
            for path in OPERATIONS:
                assert (await client.get(path)).status_code == 200
            for reader, writer in uploads:
                writer.write(b"}")
                answer = await reader.read()
                assert answer.startswith(b"HTTP/1.1 401 "), answer
            assert (await client.get(CONTACTS, headers=auth)).status_code == 200
    finally:
        for _, writer in uploads:
            writer.close()
            await writer.wait_closed()

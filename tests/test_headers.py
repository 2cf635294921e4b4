"""The header limit (SPEC 6.8): headers over 64 KiB in all are a 431 with SPEC 6.1's JSON body,
before any other check, through the ASGI app and through a real `contactbase serve` (uvicorn
with httptools, which takes any header section whole before the app sees it)."""

import contextlib
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from tests.factories import CONTACTS
from tests.test_ratelimit import free_port, wait_until_up

LIMIT = 64 * 1024
TOO_LARGE = f"The request's headers are larger than {LIMIT} bytes in all."
Headers = Sequence[tuple[str | bytes, str | bytes]]


def header_size(headers: Headers) -> int:
    """SPEC 6.8's count, written out here rather than imported from the code under test: each
    header's name and value, and 4 bytes for its `: ` and line end."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


def assert_headers_too_large(status: int, headers: Mapping[str, str], body: bytes) -> None:
    assert status == 431, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "message": TOO_LARGE,
        "code": "headers_too_large",
        "request_id": headers["x-request-id"],
    }


def padding(client: httpx.AsyncClient, total: int, path: str = "/healthz") -> dict[str, str]:
    """An X-Pad header that brings the request's headers, with those httpx adds, to `total`."""
    sent = client.build_request("GET", path, headers={"X-Pad": ""}).headers.raw
    return {"X-Pad": "p" * (total - header_size(sent))}


async def test_headers_of_64_kib_pass_and_one_byte_more_is_a_431(
    client: httpx.AsyncClient,
) -> None:
    exact = padding(client, LIMIT)
    accepted = await client.get("/healthz", headers=exact)
    assert header_size(accepted.request.headers.raw) == LIMIT
    assert accepted.status_code == 200
    over = padding(client, LIMIT + 1)
    refused = await client.get("/healthz", headers=over)
    assert header_size(refused.request.headers.raw) == LIMIT + 1
    assert_headers_too_large(refused.status_code, refused.headers, refused.content)
    metrics = (await client.get("/metrics")).text
    assert 'contactbase_requests_total{method="GET",route="unmatched",status="431"} 1.0' in metrics


async def asgi_get(app: FastAPI, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    """GET /healthz straight through the ASGI interface: httpx's headers take quadratic time
    to build 100,000 of them."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/healthz",
        "raw_path": b"/healthz",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 123),
        "server": ("testserver", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"x-big", b"b" * 100 * 1024)], id="one 100 KiB header"),
        pytest.param([(b"x-%d" % n, b"y") for n in range(100_000)], id="100,000 small headers"),
        # 80 KiB as counted, though their names and values hold only 16 KiB.
        pytest.param([(b"a", b"")] * 16_384, id="16,384 empty headers"),
    ],
)
async def test_large_or_numerous_headers_are_refused(
    app: FastAPI, headers: list[tuple[bytes, bytes]]
) -> None:
    start, body = await asgi_get(app, [(b"host", b"testserver"), *headers])
    answer = {name.decode(): value.decode() for name, value in start["headers"]}
    assert_headers_too_large(start["status"], answer, body["body"])


async def test_the_431_comes_before_every_other_check(client: httpx.AsyncClient) -> None:
    """Before the body limit (413), credentials (401) and routing (404); the client's request
    id is kept, as in every answer."""
    over = {"X-Request-Id": "mine", "X-Pad": "p" * LIMIT}
    for method, path in (("POST", CONTACTS), ("GET", "/nowhere")):
        response = await client.request(method, path, content=b"x" * (2 << 20), headers=over)
        assert_headers_too_large(response.status_code, response.headers, response.content)
        assert response.headers["x-request-id"] == "mine"


@dataclass
class Served:
    """A running `contactbase serve`: its port, and the environment its CLI commands need."""

    port: int
    env: dict[str, str]


def contactbase(env: Mapping[str, str], *args: str) -> Any:
    """A CLI command run as an operator runs it, with --json: what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "contactbase", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextlib.contextmanager
def contactbase_serve(directory: Path, *options: str) -> Iterator[Served]:
    """`contactbase serve` on a spare port, on a SQLite database of its own that the CLI
    migrates first; its output goes to serve.log in `directory`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONTACTBASE")}
    env |= {
        "CONTACTBASE_DATABASE_URL": f"sqlite:///{directory / 'contactbase.db'}",
        "CONTACTBASE_EXPORT_DIR": str(directory / "exports"),
    }
    contactbase(env, "migrate")
    port = free_port()
    with (directory / "serve.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "contactbase", "serve", "--port", str(port), *options],
            env=env,
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        yield Served(port, env)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:  # requests still held open by a failed test
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with contactbase_serve(tmp_path_factory.mktemp("serve")) as server:
        yield server


def exchange(port: int, headers: Headers) -> tuple[int, dict[str, str], bytes]:
    """GET /healthz with exactly these headers (no Host, Accept-Encoding or other added)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", "/healthz", skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        answer = {name.lower(): value for name, value in response.getheaders()}
        return response.status, answer, response.read()
    finally:
        connection.close()


def exactly(total: int) -> list[tuple[str, str]]:
    base = [("Host", "x"), ("Connection", "close")]
    return [*base, ("X-Pad", "p" * (total - header_size([*base, ("X-Pad", "")])))]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(exactly(LIMIT + 1), id="one byte over"),
        pytest.param([("Host", "x"), ("X-Big", "b" * 100 * 1024)], id="one 100 KiB header"),
        pytest.param([("Host", "x"), ("X-Big", "b" * 8 * 1024 * 1024)], id="one 8 MiB header"),
        pytest.param(
            [("Host", "x"), *((f"X-{n}", "y") for n in range(100_000))], id="100,000 headers"
        ),
    ],
)
def test_a_running_server_refuses_headers_over_64_kib(
    served: Served, headers: list[tuple[str, str]]
) -> None:
    status, answer, body = exchange(served.port, headers)
    assert_headers_too_large(status, answer, body)
    status, _, body = exchange(served.port, exactly(LIMIT))
    assert (status, body) == (200, b'{"status":"ok"}')

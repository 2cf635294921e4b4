"""docs/deploy.md's nginx configuration, as the page gives it (the client timeouts shortened to
2 s), in front of a real `contactbase serve`: requests go through with the client's address
forwarded, nginx answers the limits in SPEC 6.1's format, and clients that trickle their headers
or pause in their bodies are cut off by nginx while the service stays responsive."""

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI
from tests.factories import CONTACTS, SEED, bearer
from tests.test_headers import (
    Served,
    assert_headers_too_large,
    contactbase,
    contactbase_serve,
)
from tests.test_ratelimit import free_port

DEPLOY = Path(__file__).parents[1] / "docs" / "deploy.md"
TIMEOUT = 2.0  # the test's client_header_timeout and client_body_timeout, in seconds
FAR = "127.0.0.2"  # a client address other than nginx's own, to see X-Forwarded-For at work
SLOW_CLIENTS = 20


def nginx_binary() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        if IN_CI:
            pytest.fail("nginx is not installed; CI installs it (.ci/run)")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


def documented_config(listen: int, upstream: int) -> str:
    """The page's nginx block, pointed at the test's ports, with short client timeouts."""
    blocks = re.findall(r"```nginx\n(.*?)```", DEPLOY.read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/deploy.md holds one nginx block"
    config: str = blocks[0]
    for documented, tested in (
        ("listen 80;", f"listen 127.0.0.1:{listen};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};"),
        ("client_header_timeout 10s;", f"client_header_timeout {TIMEOUT:g}s;"),
        ("client_body_timeout 10s;", f"client_body_timeout {TIMEOUT:g}s;"),
    ):
        assert config.count(documented) == 1, documented
        config = config.replace(documented, tested)
    return config


def main_config(directory: Path, site: str) -> str:
    """What Debian's /etc/nginx/nginx.conf provides around the site, in the test's directory."""
    temp = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx's workers would run as nobody, who cannot enter pytest's directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"daemon off;\nworker_processes 1;\n{user}pid {directory / 'nginx.pid'};\n"
        "events { worker_connections 256; }\n"
        f"http {{\n    access_log {directory / 'access.log'};\n{temp}\n{site}\n}}\n"
    )


@contextlib.contextmanager
def nginx(binary: str, directory: Path, upstream: int) -> Iterator[int]:
    """nginx in the foreground with the documented site in front of `upstream`; its port."""
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(main_config(directory, documented_config(port, upstream)))
    with (directory / "nginx.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(config), "-e", "stderr"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            assert process.poll() is None, (directory / "nginx.log").read_text()
            assert time.monotonic() < deadline, "nginx did not come up"
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@dataclass
class Proxied:
    service: Served
    port: int  # nginx's
    log: Path  # the service's output, its access log among it


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    """The service allows one request in progress: a body that nginx passed on before it had
    arrived whole would hold that place, and the next request would be a 503."""
    binary = nginx_binary()
    directory = tmp_path_factory.mktemp("proxied")
    with (
        contactbase_serve(directory, "--limit-concurrency", "1") as service,
        nginx(binary, directory, service.port) as port,
    ):
        yield Proxied(service, port, directory / "serve.log")


@contextlib.asynccontextmanager
async def far_client(port: int) -> AsyncIterator[httpx.AsyncClient]:
    """A client of nginx that connects from 127.0.0.2."""
    transport = httpx.AsyncHTTPTransport(local_address=FAR)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://127.0.0.1:{port}") as http:
        yield http


async def exchange(port: int, request: bytes) -> bytes:
    """Raw bytes in, the whole answer out (the connection closed by the other side). nginx may
    answer before it has read the whole request: the answer is read while the request is sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()

    sending = asyncio.create_task(write())
    try:
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_create_goes_through_with_the_clients_address(proxied: Proxied) -> None:
    env = proxied.service.env
    space = contactbase(env, "space", "create", "Proxied")
    auth = bearer(contactbase(env, "key", "create", str(space["id"]))["key"])
    async with far_client(proxied.port) as http:
        created = await http.post(CONTACTS, json=SEED, headers=auth | {"X-Request-Id": "mine"})
        assert created.status_code == 201, created.text
        assert created.json()["emails"] == SEED["emails"]
        assert created.headers["x-request-id"] == "mine"
        got = await http.get(f"{CONTACTS}/{created.json()['id']}", headers=auth)
        assert got.json()["emails"] == SEED["emails"]
    log = proxied.log.read_text()
    assert f'INFO:     {FAR}:0 - "POST {CONTACTS} HTTP/1.1" 201' in log, log


def parsed(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """An HTTP/1.1 answer's status, headers (by lower-case name) and body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    fields = (line.split(":", 1) for line in lines)
    return int(status_line.split()[1]), {k.lower(): v.strip() for k, v in fields}, body


async def test_header_and_body_limits_answer_in_the_api_format(proxied: Proxied) -> None:
    """Each layer's refusal, told apart by the request id: the client's from the service,
    nginx's own from nginx."""
    mine = {"X-Request-Id": "mine"}
    async with far_client(proxied.port) as http:
        passed = await http.get("/healthz", headers=mine | {"X-Pad": "p" * 60 * 1024})
        assert passed.status_code == 200
        # 80 KiB, in lines nginx's buffers hold: the service refuses them.
        over = mine | {"X-Pad-1": "p" * 40 * 1024, "X-Pad-2": "p" * 40 * 1024}
        by_service = await http.get("/healthz", headers=over)
        assert_headers_too_large(by_service.status_code, by_service.headers, by_service.content)
        assert by_service.headers["x-request-id"] == "mine"
    start = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: mine\r\n"
    for headers in (
        b"X-Big: " + b"b" * 100 * 1024 + b"\r\n",
        b"".join(b"X-%d: y\r\n" % n for n in range(100_000)),
    ):
        answer = await exchange(proxied.port, start + headers + b"Connection: close\r\n\r\n")
        status, fields, body = parsed(answer)
        assert_headers_too_large(status, fields, body)
        assert re.fullmatch("[0-9a-f]{32}", fields["x-request-id"])
    declared = (
        f"POST {CONTACTS}/batch HTTP/1.1\r\nHost: x\r\nContent-Length: {16 * 1024 * 1024 + 1}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    status, fields, body = parsed(await exchange(proxied.port, declared))
    assert (status, fields["content-type"]) == (413, "application/json")
    assert json.loads(body) == {
        "message": "The request body is larger than 16777216 bytes.",
        "code": "payload_too_large",
        "request_id": fields["x-request-id"],
    }


async def trickle(port: int, head: bytes, then: bytes, every: float) -> tuple[float, bytes]:
    """Send `head`, then a byte of `then` every `every` seconds until the other side hangs
    up; the seconds that took, and what it answered."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def drip() -> None:
        writer.write(head)
        for byte in then:
            await asyncio.sleep(every)
            writer.write(bytes([byte]))
            await writer.drain()

    dripping = asyncio.create_task(drip())
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=TIMEOUT + 8)
    except ConnectionResetError:
        answer = b""
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await dripping
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return time.monotonic() - began, answer


async def test_slow_clients_are_cut_off_by_nginx_while_the_service_answers(
    proxied: Proxied,
) -> None:
    endless = b"a" * 1000
    slow_headers = [
        trickle(proxied.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", endless, 0.2)
        for _ in range(SLOW_CLIENTS)
    ]
    paused_body = trickle(
        proxied.port,
        f"POST {CONTACTS} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{{".encode(),
        b"}",
        TIMEOUT + 3,
    )
    trickling = asyncio.gather(*slow_headers, paused_body)
    await asyncio.sleep(TIMEOUT / 2)
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxied.port}") as through_nginx,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxied.service.port}") as direct,
    ):
        for http in (through_nginx, direct):
            began = time.monotonic()
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/nowhere")).status_code == 404  # not 503: no place held
            assert time.monotonic() - began < 1
    for seconds, answer in await trickling:
        assert answer == b""  # nginx hangs up without a word (its log says 408)
        assert TIMEOUT - 0.5 < seconds < TIMEOUT + 2

"""The webhook sender against real local HTTP servers: what is sent, what is read back, and where
it refuses to go. DNS is stood in for by injected resolvers; nothing leaves the machine."""

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from contactbase.webhooks.sending import (
    RESPONSE_LIMIT,
    Resolve,
    Sender,
    UrlRefused,
    check_url,
    check_url_shape,
    refused_kind,
)

BODY = b'{"type":"contact.created","data":{"id":1}}'
HEADERS = {"Content-Type": "application/json", "Webhook-Signature": "v1,abc="}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


@dataclass
class Receiver:
    """A local HTTP/1.1 server (keep-alive) that records every request it is sent."""

    port: int
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.received.append(
                Received(self.path, dict(self.headers.items()), body, self.client_address[1])
            )
            if self.path == "/hang":
                receiver.release.wait(10)  # until the test ends; the sender gives up first
                self.close_connection = True
                return
            status, answer, extra = {
                "/ok": (200, b"thanks", {}),
                "/fail": (500, b"broken", {}),
                "/redirect": (302, b"", {"Location": receiver.url("/target")}),
                "/big": (200, b"x" * 100_000, {}),
            }.get(self.path, (404, b"", {}))
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """The sender cuts connections on purpose (a long answer, a timeout): not news."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    found = Receiver(port=server.server_address[1])
    server.RequestHandlerClass = _handler(found)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield found
    found.release.set()
    server.shutdown()
    server.server_close()


def answering(*answers: list[str]) -> tuple[list[str], Resolve]:
    """A stand-in for DNS giving `answers` in turn (the last one from then on), and its log."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    return calls, resolve


async def test_a_2xx_answer_with_the_body_and_headers_as_sent(receiver: Receiver) -> None:
    calls, resolve = answering(["127.0.0.1"])
    sender = Sender(allow_private=True, resolve=resolve)
    answer = await sender.post("e1", receiver.url("/ok", host="hooks.test"), BODY, HEADERS)
    await sender.close()
    assert (answer.status, answer.response, answer.error, answer.ok) == (200, "thanks", None, True)
    assert 0 <= answer.latency_ms < 5000
    [request] = receiver.received
    assert request.body == BODY
    assert request.headers["Host"] == f"hooks.test:{receiver.port}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Webhook-Signature"] == "v1,abc="
    assert calls == ["hooks.test"]


async def test_a_500_answer(receiver: Receiver) -> None:
    sender = Sender(allow_private=True)
    answer = await sender.post("e1", receiver.url("/fail"), BODY, HEADERS)
    await sender.close()
    assert (answer.status, answer.response, answer.error, answer.ok) == (500, "broken", None, False)


async def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    sender = Sender(allow_private=True)
    answer = await sender.post("e1", receiver.url("/redirect"), BODY, HEADERS)
    await sender.close()
    assert (answer.status, answer.error, answer.ok) == (302, None, False)
    assert [request.path for request in receiver.received] == ["/redirect"]


async def test_a_long_answer_is_cut_at_4_kib(receiver: Receiver) -> None:
    sender = Sender(allow_private=True)
    answer = await sender.post("e1", receiver.url("/big"), BODY, HEADERS)
    await sender.close()
    assert answer.status == 200
    assert answer.response == "x" * RESPONSE_LIMIT == "x" * 4096


async def test_a_receiver_that_hangs_times_out(receiver: Receiver) -> None:
    sender = Sender(timeout=1, allow_private=True)
    started = time.monotonic()
    answer = await sender.post("e1", receiver.url("/hang"), BODY, HEADERS)
    elapsed = time.monotonic() - started
    await sender.close()
    assert (answer.status, answer.error) == (None, "timed out after 1 s")
    assert 0.9 <= elapsed < 5
    assert 900 <= answer.latency_ms < 5000


async def test_a_closed_port_is_connection_refused() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    sender = Sender(allow_private=True)
    answer = await sender.post("e1", f"http://127.0.0.1:{port}/", BODY, HEADERS)
    await sender.close()
    assert (answer.status, answer.response, answer.error) == (None, "", "connection refused")


async def test_tls_trouble_is_described(receiver: Receiver) -> None:
    """https to a plain-HTTP server fails in the handshake; the error says it was TLS."""
    _, resolve = answering(["127.0.0.1"])
    sender = Sender(timeout=5, allow_private=True, resolve=resolve)
    answer = await sender.post("e1", f"https://tls.test:{receiver.port}/", BODY, HEADERS)
    await sender.close()
    assert answer.status is None
    assert answer.error is not None
    assert answer.error.startswith("TLS error: ")


async def test_loopback_is_refused_and_never_contacted(receiver: Receiver) -> None:
    _, resolve = answering(["127.0.0.1"])
    sender = Sender(resolve=resolve)
    by_ip = await sender.post("e1", receiver.url("/ok"), BODY, HEADERS)
    by_name = await sender.post("e2", receiver.url("/ok", host="local.test"), BODY, HEADERS)
    await sender.close()
    assert (by_ip.status, by_ip.error) == (None, "refused: 127.0.0.1 is a loopback address")
    assert (by_name.status, by_name.error) == (
        None,
        "refused: local.test resolves to 127.0.0.1, a loopback address",
    )
    assert receiver.received == []


async def test_one_private_record_beside_a_public_one_refuses() -> None:
    calls, resolve = answering(["93.184.216.34", "10.0.0.5"])
    sender = Sender(timeout=2, resolve=resolve)
    answer = await sender.post("e1", "https://internal.example/hook", BODY, HEADERS)
    await sender.close()
    assert answer.error == "refused: internal.example resolves to 10.0.0.5, a private address"
    with pytest.raises(UrlRefused) as refused:
        await check_url("https://internal.example/hook", allow_private=False, resolve=resolve)
    assert str(refused.value) == (
        "The URL's host internal.example resolves to 10.0.0.5, a private address; webhooks may "
        "only go to public addresses (CONTACTBASE_WEBHOOK_ALLOW_PRIVATE=true allows private ones)."
    )
    assert calls == ["internal.example", "internal.example"]


async def test_a_host_that_does_not_resolve() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    sender = Sender(resolve=resolve)
    answer = await sender.post("e1", "https://nowhere.test/", BODY, HEADERS)
    await sender.close()
    assert (answer.status, answer.error) == (None, "could not resolve nowhere.test")
    with pytest.raises(UrlRefused, match=r"^The URL's host nowhere.test does not resolve\.$"):
        await check_url("https://nowhere.test/", allow_private=False, resolve=resolve)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.1.2.3", "private"),
        ("10.0.0.5", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("64:ff9b::7f00:1", "reserved"),
        ("93.184.216.34", None),
        ("::ffff:93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
)
def test_which_addresses_are_refused(address: str, kind: str | None) -> None:
    assert refused_kind(address) == kind


async def test_ip_literals_are_checked_without_resolving() -> None:
    calls, resolve = answering(["127.0.0.1"])
    await check_url("https://93.184.216.34/hook", allow_private=False, resolve=resolve)
    for url in ("http://[::ffff:127.0.0.1]/", "http://169.254.169.254/", "http://100.64.0.1/"):
        with pytest.raises(UrlRefused, match="webhooks may only go to public addresses"):
            await check_url(url, allow_private=False, resolve=resolve)
    await check_url("http://169.254.169.254/", allow_private=True, resolve=resolve)
    assert calls == []


async def test_odd_spellings_of_loopback_are_caught_by_resolution() -> None:
    """The system resolver turns 127.1 and 2130706433 into 127.0.0.1, which is then refused."""
    for url in ("http://127.1/", "http://2130706433/", "http://localhost/"):
        with pytest.raises(UrlRefused, match="a loopback address"):
            await check_url(url, allow_private=False)


async def test_the_address_is_pinned_for_the_delivery(receiver: Receiver) -> None:
    """The name is resolved once per delivery and the request goes to that answer: a second
    answer (as DNS rebinding would give) is never looked up within the same delivery."""
    calls, resolve = answering(["127.0.0.1"], ["127.0.0.2"])
    sender = Sender(timeout=5, allow_private=True, resolve=resolve)
    first = await sender.post("e1", receiver.url("/ok", host="rebind.test"), BODY, HEADERS)
    assert calls == ["rebind.test"]
    assert (first.status, first.error) == (200, None)
    [request] = receiver.received
    assert request.headers["Host"] == f"rebind.test:{receiver.port}"
    # The next delivery resolves again and goes where the new answer says (nothing listens there).
    second = await sender.post("e1", receiver.url("/ok", host="rebind.test"), BODY, HEADERS)
    await sender.close()
    assert calls == ["rebind.test", "rebind.test"]
    assert (second.status, second.error) == (None, "connection refused")
    assert len(receiver.received) == 1


async def test_one_client_per_endpoint(receiver: Receiver) -> None:
    """Keep-alive connections are reused within an endpoint and never across endpoints."""
    sender = Sender(allow_private=True)
    first = await sender.post("e1", receiver.url("/ok"), BODY, HEADERS)
    again = await sender.post("e1", receiver.url("/ok"), BODY, HEADERS)
    other = await sender.post("e2", receiver.url("/ok"), BODY, HEADERS)
    await sender.close()
    assert [first.status, again.status, other.status] == [200, 200, 200]
    ports = [request.client_port for request in receiver.received]
    assert ports[0] == ports[1] != ports[2]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/hook", "must start with http:// or https://"),
        ("http:///hook", "has no host"),
        ("https://user:secret@example.com/hook", "use the signature to authenticate"),
        ("https://example.com:99999/hook", "has port 99999"),
        ("https://example.com:abc/hook", "is not valid"),
        ("https://exa mple.com/hook", "has an invalid host"),
        ("https://example.com/" + "a" * 2048, "at most 2,048 are allowed"),
    ],
)
def test_bad_url_shapes(url: str, problem: str) -> None:
    message = check_url_shape(url)
    assert message is not None
    assert problem in message
    assert url[:40] in message
    assert "\n" not in message


async def test_a_bad_shape_is_refused_before_anything_else() -> None:
    calls, resolve = answering(["93.184.216.34"])
    sender = Sender(resolve=resolve)
    answer = await sender.post("e1", "ftp://example.com/", BODY, HEADERS)
    await sender.close()
    assert answer.error == check_url_shape("ftp://example.com/")
    with pytest.raises(UrlRefused, match="must start with http:// or https://"):
        await check_url("ftp://example.com/", allow_private=False, resolve=resolve)
    assert calls == []


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "http://example.com:8080/hook?space=1",
        "https://[2606:2800:220:1::1]/hook",
        "https://bücher.example/hook",
        "https://example.com/" + "a" * 2028,
    ],
)
def test_good_url_shapes(url: str) -> None:
    assert check_url_shape(url) is None

"""Webhook tests' parts: a real HTTP receiver, a threaded server on 127.0.0.1 that records every
request, answers each path as told (in turn, the last answer repeating), and can hang until
released, counting the requests it holds at once; and ways to wait for a
worker's rounds."""

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from contactbase.webhooks.worker import WebhookWorker


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when it arrived


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # hold the request until `release()` (or the server stops)


class Receiver:
    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[Received] = []
        self.replies: dict[str, list[Reply]] = {}
        self.holding: dict[str, int] = {}
        self.most_held: dict[str, int] = {}
        self.released = threading.Event()
        self.lock = threading.Lock()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *replies: Reply) -> None:
        """Answer `path` with these replies in turn, the last repeating."""
        with self.lock:
            self.replies[path] = list(replies)

    def release(self) -> None:
        self.released.set()

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [one for one in self.received if one.path == path]

    async def wait_for(self, path: str, count: int, within: float = 20.0) -> list[Received]:
        """The first `count` requests to `path`, once they have come (fails after `within` s)."""
        await until(lambda: len(self.at(path)) >= count, within)
        return self.at(path)[:count]

    def _reply(self, path: str) -> Reply:
        with self.lock:
            planned = self.replies.get(path) or [Reply()]
            return planned.pop(0) if len(planned) > 1 else planned[0]

    def _hold(self, path: str, change: int) -> None:
        with self.lock:
            self.holding[path] = self.holding.get(path, 0) + change
            self.most_held[path] = max(self.most_held.get(path, 0), self.holding[path])


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {name.lower(): value for name, value in self.headers.items()}
            with receiver.lock:
                receiver.received.append(Received(self.path, headers, body, time.time()))
            reply = receiver._reply(self.path)
            if reply.hang:
                receiver._hold(self.path, 1)
                receiver.released.wait(60)
                receiver._hold(self.path, -1)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Receiver(0)))
    receiver = Receiver(server.server_address[1])
    server.RequestHandlerClass = _handler(receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release()
        server.shutdown()
        server.server_close()


async def settle(worker: WebhookWorker, rounds: int = 100) -> None:
    """Run rounds until one starts nothing (messages due later are left)."""
    for _round in range(rounds):
        started = await worker.run_once()
        await worker.drain()
        if not started:
            return
    raise AssertionError("the worker kept finding work")


async def until(check: Callable[[], bool], within: float = 20.0) -> None:
    """Wait (without blocking the loop) until `check()` holds."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the condition did not come to hold")
        await asyncio.sleep(0.05)

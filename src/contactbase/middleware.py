"""The outermost layer of every request: header limit, request id, concurrency limit, body limit,
metrics, and the last word on failures (500 with a request id, 503 while the database is away),
never a stack trace."""

import contextlib
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from urllib.parse import quote

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contactbase.db import is_retryable, is_unavailable
from contactbase.dispatch import route_path
from contactbase.errors import (
    ApiError,
    HeadersTooLarge,
    InternalError,
    Overloaded,
    PayloadTooLarge,
    ServiceUnavailable,
    render,
)
from contactbase.metrics import Metrics

log = logging.getLogger("contactbase")

CLIENT_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
MAX_HEADER_BYTES = 64 * 1024  # SPEC 6.8
# Never refused as overload: a liveness probe that failed under load would have an orchestrator
# kill a busy but healthy server, and the metrics are most wanted when the server is busiest.
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class ClientGone(Exception):
    """The client disconnected before its request body had arrived."""


AccessLog = Callable[[bytes], object]


def access_line(scope: Scope, status: int, seconds: float, request_id: str) -> bytes:
    """A request as the access log shows it: uvicorn's line (client, request line, status),
    then the time taken and the request id. The target is the one sent (`raw_path`), else the
    path quoted, so that no request can write a line of its own into the log."""
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "-"
    target = scope.get("raw_path") or quote(scope["path"]).encode()
    query = scope.get("query_string")
    if query:
        target += b"?" + query
    return b'INFO:     %s - "%s %s HTTP/%s" %d %.1fms %s\n' % (
        peer.encode(),
        scope["method"].encode(),
        target,
        scope.get("http_version", "1.1").encode(),
        status,
        seconds * 1000,
        request_id.encode(),
    )


def header_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The size of a request's headers as SPEC 6.8 counts it: each header's name and value, and
    4 bytes for the `: ` and the line end HTTP/1.1 puts around them, so that a flood of empty
    headers counts too. The request line is not counted."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


def write_to_stdout(line: bytes) -> None:
    """One write of a whole line, so that the lines of several workers never interleave (the
    logging module's formatting cost a tenth of a request; docs/performance.md)."""
    # Standard output closed: the request goes on without its log line.
    with contextlib.suppress(OSError, ValueError):
        os.write(sys.stdout.fileno(), line)


class RequestContext:
    """Pure ASGI middleware (no per-request task or body copy beyond what the limit needs)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: Metrics,
        larger_bodies: dict[str, int] | None = None,
        access_log: AccessLog | None = None,
        limit_concurrency: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # Paths whose bodies have a limit of their own (a batch's), by path.
        self.larger_bodies = larger_bodies or {}
        self.metrics = metrics
        self.access_log = access_log
        # Requests in progress in this process, out of at most `limit_concurrency` (None: no
        # limit). One event loop per process, so a plain counter is exact.
        self.limit_concurrency = limit_concurrency
        self.in_progress = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        # The server has already read the headers whole (docs/deploy.md): refuse before any
        # other part of the service walks them.
        headers_too_large = header_bytes(scope["headers"]) > MAX_HEADER_BYTES
        sent_id = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent_id if CLIENT_REQUEST_ID.fullmatch(sent_id) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False
        counted = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = request_id
                decision = scope["state"].get("ratelimit")
                if decision is not None:
                    for name, value in decision.headers():
                        headers.raw.append((name, value))
            await send(message)

        try:
            if headers_too_large:
                await _answer(send_with_id, HeadersTooLarge(MAX_HEADER_BYTES), request_id)
                return
            path = route_path(scope)
            if self.limit_concurrency is not None and path not in UNLIMITED_PATHS:
                # Counted from before the body is read: a slow upload holds its place.
                if self.in_progress >= self.limit_concurrency:
                    await _answer(send_with_id, Overloaded(), request_id)
                    return
                self.in_progress += 1
                counted = True
            limit = self.larger_bodies.get(path, self.max_body_bytes)
            try:
                body = await self._read_body(scope, receive, limit)
            except ClientGone:
                status = 499  # as nginx counts it: no one to answer, and nothing to act on
                return
            if body is None:
                await _answer(send_with_id, PayloadTooLarge(limit), request_id)
            else:
                await self.app(scope, _replay(body, receive), send_with_id)
        except Exception as exc:
            if started:
                raise
            if is_unavailable(exc):
                self.metrics.database_unavailable.inc()
                log.warning("database unavailable (request %s): %r", request_id, exc)
                error: ApiError = ServiceUnavailable(
                    "The database is unavailable; retry in a few seconds."
                )
            elif is_retryable(exc):  # a deadlock or serialisation failure that was not retried
                log.warning("database conflict (request %s): %r", request_id, exc)
                error = ServiceUnavailable("The database is busy; retry the request.")
            else:
                log.exception("unexpected failure (request %s)", request_id)
                error = InternalError()
            await _answer(send_with_id, error, request_id)
        finally:
            if counted:
                self.in_progress -= 1
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - began
            self.metrics.answered(scope["method"], route, status, seconds)
            if self.access_log is not None:
                self.access_log(access_line(scope, status, seconds, request_id))

    async def _read_body(self, scope: Scope, receive: Receive, limit: int) -> bytes | None:
        """The whole body, or None when it passes the limit: read up front so that 413 comes
        before every other check, whether or not Content-Length was sent."""
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away mid-body: what arrived is not the request it meant.
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _answer(send: Send, error: ApiError, request_id: str) -> None:
    status, headers, content = render(error, request_id)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then waits for the disconnect."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

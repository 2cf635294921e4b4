"""The outermost layer of every request: request id, body limit, metrics, and the last word on
failures (500 with a request id, 503 while the database is away), never a stack trace; and
inside it, the express lane of the hottest endpoints."""

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contactbase.db import is_retryable, is_unavailable
from contactbase.errors import DomainError

log = logging.getLogger("contactbase")

CLIENT_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


class ClientGone(Exception):
    """The client disconnected before its request body had arrived."""


class Metrics:
    """The service's Prometheus metrics, in a registry of the app's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "contactbase_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "contactbase_request_seconds",
            "Time to answer a request.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.unlimited = Counter(
            "contactbase_ratelimit_unlimited",
            "Requests served without a rate-limit check: the limit store was unreachable.",
            registry=self.registry,
        )
        self.database_unavailable = Counter(
            "contactbase_database_unavailable",
            "Requests answered 503: database unavailable.",
            registry=self.registry,
        )


def _json_response(status: int, body: dict[str, Any]) -> tuple[Message, Message]:
    content = orjson.dumps(body)
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": content}


class RequestContext:
    """Pure ASGI middleware (no per-request task or body copy beyond what the limit needs)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        sent_id = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent_id if CLIENT_REQUEST_ID.fullmatch(sent_id) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False

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
            try:
                body = await self._read_body(scope, receive)
            except ClientGone:
                status = 499  # as nginx counts it: no one to answer, and nothing to act on
                return
            if body is None:
                await self._answer(
                    send_with_id,
                    413,
                    {"message": f"The request body is larger than {self.max_body_bytes} bytes."},
                )
            else:
                await self.app(scope, _replay(body, receive), send_with_id)
        except Exception as exc:
            if started:
                raise
            if is_unavailable(exc):
                self.metrics.database_unavailable.inc()
                log.warning("database unavailable (request %s): %r", request_id, exc)
                await self._answer(
                    send_with_id,
                    503,
                    {"message": "The database is unavailable; retry in a few seconds."},
                )
            elif is_retryable(exc):  # a deadlock or serialisation failure that was not retried
                log.warning("database conflict (request %s): %r", request_id, exc)
                await self._answer(
                    send_with_id, 503, {"message": "The database is busy; retry the request."}
                )
            else:
                log.exception("unexpected failure (request %s)", request_id)
                await self._answer(
                    send_with_id,
                    500,
                    {"message": "Internal server error.", "request_id": request_id},
                )
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - began)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when it passes the limit: read up front so that 413 comes
        before every other check, whether or not Content-Length was sent."""
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
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
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
        start, content = _json_response(status, body)
        await send(start)
        await send(content)


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


Endpoint = Callable[..., Awaitable[Response]]
ErrorAnswer = Callable[[Request, Exception], Awaitable[Response]]


class ExpressLane:
    """Pure ASGI, inside RequestContext: the hottest endpoints (create, get by id) called
    straight, past FastAPI's exception middleware, router, dependency resolution and response
    serialisation, about 110 µs of CPU a request (an eighth of a get). Nothing they need is
    skipped: they take only the request and their path parameters as text, authorise and parse
    on their own, return a Response, and their errors go through the app's one error handler.
    Each is matched by its own route's method and pattern, and only routes that FastAPI would
    try first are given (app.express_routes); tests/test_express.py holds that the answers are
    FastAPI's. FastAPI still documents them."""

    def __init__(self, app: ASGIApp, *, routes: list[APIRoute], answer_error: ErrorAnswer) -> None:
        self.app = app
        self.routes = routes
        self.answer_error = answer_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self.routes:
                match = route.path_regex.match(scope["path"])
                if match is not None and scope["method"] in (route.methods or ()):
                    await self._serve(route, match.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self, route: APIRoute, params: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        scope["route"], scope["path_params"] = route, params
        request = Request(scope, receive)
        endpoint: Endpoint = route.endpoint
        try:
            response = await endpoint(request, **params)
        except DomainError as exc:
            response = await self.answer_error(request, exc)
        await response(scope, receive, send)

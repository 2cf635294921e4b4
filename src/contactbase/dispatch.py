"""The one dispatcher of the public API, and the declarations it serves.

Each operation is declared once (`Api.operation`): method, path, permission and rate-limit
endpoint (`Access`), query model, body model, answers. The dispatcher serves it from that
declaration, in the order of SPEC section 2: key, permission, limit (`authorise`), then the
query, then the body; it hands the handler a `Call` that holds the caller and the parsed
inputs, and the request's connection (`Lease`), which it gives back before the answer is sent.
The OpenAPI document is built from the same declarations (openapi.py).

It is pure ASGI, inside RequestContext: the public API is served past FastAPI's router,
dependency resolution and serialisation (their cost is in docs/performance.md). Everything
else (operations endpoints, /docs, /openapi.json, unknown paths) goes on to FastAPI.
"""

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from contactbase import idempotency
from contactbase.db import Lease
from contactbase.errors import ApiError, MethodNotAllowed, render
from contactbase.idempotency import Claim
from contactbase.prepared import Connection
from contactbase.spaces.access import Access, authorise
from contactbase.spaces.service import Caller
from contactbase.state import AppState, state_of
from contactbase.validation import parse_body, parse_query

log = logging.getLogger("contactbase")

Query = TypeVar("Query", bound=BaseModel)
Body = TypeVar("Body")
Sent = TypeVar("Sent", bound=BaseModel)
Read = TypeVar("Read")


@dataclass
class Call(Generic[Query, Body]):
    """One request to an operation, authorised and parsed."""

    request: Request
    state: AppState
    lease: Lease
    params: dict[str, str]
    query: Query
    body: Body
    _caller: Caller | None = None
    # The request's hold on its Idempotency-Key, when it sent one (contactbase.idempotency).
    claim: Claim | None = None

    async def keep(
        self,
        target: "Connection | AsyncSession",
        response: Response,
        contact_ids: Sequence[int] = (),
    ) -> None:
        """Store `response` as the answer to the request's Idempotency-Key, if it sent one and
        the answer is one to store; in `target`'s transaction, that of the effect; with the
        contacts it names."""
        if self.claim is not None and idempotency.worth_keeping(response):
            await idempotency.keep(target, self.claim, response, contact_ids)

    @property
    def caller(self) -> Caller:
        """Who is calling; every operation with an Access has one."""
        assert self._caller is not None, "an operation without Access has no caller"
        return self._caller


Handler = Callable[[Call[Query, Body]], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """An operation of the public API, as declared; the dispatcher and the OpenAPI document
    both read it."""

    method: str
    path: str  # the whole path template, e.g. /public-api/v1/contacts/{contact_id}
    operation_id: str
    handler: Handler[Any, Any]
    access: Access | None
    query: type[BaseModel]
    body: type[BaseModel] | None
    status: int
    response: type[BaseModel] | None
    summary: str
    # Errors this operation answers beyond those every operation of its kind does.
    errors: tuple[type[ApiError], ...] = ()
    # Further documented answers (OpenAPI response objects by status).
    answers: dict[str, Any] = field(default_factory=dict)
    # Path parameters: name -> OpenAPI parameter schema and description.
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    # How the body is read, when not as one `body` (a batch validates each item on its own).
    read: Callable[[bytes], Any] | None = None
    # Accepts Idempotency-Key (SPEC 6.2); its handler stores its answer with `Call.keep`.
    idempotent: bool = False
    pattern: re.Pattern[str] = field(init=False)
    # The query of a request that sends none (most do), parsed once; None when it is invalid.
    no_query: BaseModel | None = field(init=False)

    def __post_init__(self) -> None:
        pattern, _format, converters = compile_path(self.path)
        if set(converters) != set(self.parameters):
            raise ValueError(f"{self.path}: document each path parameter, and only those")
        object.__setattr__(self, "pattern", pattern)
        try:
            no_query: BaseModel | None = self.query.model_validate({})
        except ValidationError:
            no_query = None
        object.__setattr__(self, "no_query", no_query)

    def parse_query(self, request: Request) -> BaseModel:
        """The query, validated against the declared model (a copy of the parse made once,
        when the request sends none)."""
        if self.no_query is not None and not request.scope["query_string"]:
            return self.no_query.model_copy()
        return parse_query(self.query, request)

    @property
    def static(self) -> bool:
        """The path has no parameter."""
        return not self.parameters


class Api:
    """The declared operations of the public API under one base path."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.operations: list[Operation] = []

    @overload
    def operation(
        self,
        method: str,
        path: str,
        *,
        operation_id: str,
        access: Access | None,
        query: type[Query],
        body: type[BaseModel],
        read: Callable[[bytes], Read],
        **more: Any,
    ) -> Callable[[Handler[Query, Read]], Handler[Query, Read]]: ...

    @overload
    def operation(
        self,
        method: str,
        path: str,
        *,
        operation_id: str,
        access: Access | None,
        query: type[Query],
        body: type[Sent],
        **more: Any,
    ) -> Callable[[Handler[Query, Sent]], Handler[Query, Sent]]: ...

    @overload
    def operation(
        self,
        method: str,
        path: str,
        *,
        operation_id: str,
        access: Access | None,
        query: type[Query],
        body: None = None,
        **more: Any,
    ) -> Callable[[Handler[Query, None]], Handler[Query, None]]: ...

    def operation(
        self,
        method: str,
        path: str,
        *,
        operation_id: str,
        access: Access | None,
        query: type[BaseModel],
        body: type[BaseModel] | None = None,
        read: Callable[[bytes], Any] | None = None,
        **more: Any,
    ) -> Callable[[Handler[Any, Any]], Handler[Any, Any]]:
        """Declare the operation that the decorated handler serves; `more` takes Operation's
        other fields (status, response, summary, errors, answers, parameters, read)."""

        def declare(handler: Handler[Any, Any]) -> Handler[Any, Any]:
            self.operations.append(
                Operation(
                    method=method,
                    path=self.base + path,
                    operation_id=operation_id,
                    handler=handler,
                    access=access,
                    query=query,
                    body=body,
                    read=read,
                    **{"status": 200, "response": None, "summary": "", **more},
                )
            )
            return handler

        return declare


async def _claim(
    state: AppState, request: Request, lease: Lease, caller: Caller
) -> "idempotency.Claim | Response | None":
    """The request's hold on the Idempotency-Key it sent, or the answer it gets instead."""
    key = idempotency.sent_key(request)
    if key is None:
        return None
    return await idempotency.claim(
        lease,
        caller.space_id,
        key,
        idempotency.fingerprint(
            request.method,
            route_path(request.scope),
            request.query_params.multi_items(),
            await request.body(),
        ),
        state.settings.idempotency_ttl_seconds,
        request.scope["state"]["request_id"],
    )


def route_path(scope: Scope) -> str:
    """The path the app routes by: under a root path (a proxy's prefix), what follows it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def error_response(error: ApiError, scope: Scope) -> Response:
    """An error answer, rendered by the one renderer with the request's id."""
    status, headers, content = render(error, scope["state"]["request_id"])
    response = Response(content, status_code=status)
    response.raw_headers = headers
    return response


class Dispatcher:
    """Pure ASGI: serves the declared operations in their declared order; a path that none
    of them matches goes on to `app`."""

    def __init__(self, app: ASGIApp, *, api: Api) -> None:
        self.app = app
        self.base = api.base
        self.operations = api.operations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        if not path.startswith(self.base):
            await self.app(scope, receive, send)
            return
        matches = [(op, match) for op in self.operations if (match := op.pattern.fullmatch(path))]
        # A path spelled out (/contacts/exports) is not a value of a parameter (/contacts/{id}).
        if any(operation.static for operation, _ in matches):
            matches = [(op, match) for op, match in matches if op.static]
        if not matches:
            await self.app(scope, receive, send)
            return
        for operation, match in matches:
            if operation.method == scope["method"]:
                scope["route"] = operation
                response = await self._serve(operation, match.groupdict(), scope, receive)
                break
        else:
            allowed = sorted({operation.method for operation, _ in matches})
            response = error_response(MethodNotAllowed(allowed), scope)
        await response(scope, receive, send)

    async def _serve(
        self, operation: Operation, params: dict[str, str], scope: Scope, receive: Receive
    ) -> Response:
        request = Request(scope, receive)
        state = state_of(request)
        lease = Lease(state.db)
        failure: BaseException | None = None
        try:
            caller = None
            if operation.access is not None:
                caller = await authorise(state, request, lease, operation.access)
            query = operation.parse_query(request)
            body = None
            if operation.read is not None:
                body = operation.read(await request.body())
            elif operation.body is not None:
                body = parse_body(operation.body, await request.body())
            call = Call(request, state, lease, params, query, body, caller)
            if operation.idempotent and caller is not None:
                held = await _claim(state, request, lease, caller)
                if isinstance(held, Response):
                    return held
                call.claim = held
            try:
                response = await operation.handler(call)
            finally:
                if call.claim is not None and not call.claim.kept:
                    await idempotency.release(state.db, call.claim)
            return response
        except ApiError as error:
            # Our own answer, raised between statements: the connection is in a known state.
            if error.status >= 500:
                log.warning("%s (request %s): %s", error.code, scope["state"]["request_id"], error)
            return error_response(error, scope)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            await lease.release(failure)

"""The HTTP application: create_app(settings) wires routers, middleware and the error handler."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from contactbase import __version__
from contactbase.contacts.exports import ExportWorker
from contactbase.contacts.router import EXPRESS
from contactbase.contacts.router import router as contacts_router
from contactbase.db import Database
from contactbase.errors import DomainError
from contactbase.middleware import ExpressLane, Metrics, RequestContext
from contactbase.openapi import complete_document
from contactbase.operations import router as operations_router
from contactbase.operations import schema_head
from contactbase.ratelimit import build_limiter
from contactbase.settings import Settings
from contactbase.validation import invalid_input

DESCRIPTION = """
A self-hostable contacts API that speaks the wire format of Cometly's public contacts API.

Authenticate with `Authorization: Bearer cb_…` (a key from `contactbase key create`).
Every error is JSON with a `message`; a 422 adds `errors` by field path.
"""

ROUTING_MESSAGES = {404: "Not found.", 405: "Method not allowed."}


def as_domain_error(exc: Exception) -> DomainError:
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, RequestValidationError):
        return invalid_input(list(exc.errors()))
    if isinstance(exc, HTTPException):  # the router's own: unknown path or method
        error = DomainError(ROUTING_MESSAGES.get(exc.status_code, str(exc.detail)))
        error.status_code = exc.status_code
        return error
    raise exc


async def answer_error(request: Request, exc: Exception) -> Response:
    """The single mapping of expected errors to status and JSON body."""
    error = as_domain_error(exc)
    headers = error.headers()
    if error.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return Response(
        orjson.dumps(error.body()),
        status_code=error.status_code,
        headers=headers,
        media_type="application/json",
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only one route's)."""
    path = request.url.path
    return sorted(
        {
            method
            for route in request.app.routes
            if isinstance(route, APIRoute) and route.path_regex.fullmatch(path)
            for method in route.methods or ()
        }
    )


def express_routes() -> list[APIRoute]:
    """The routes of the express lane: the contacts router's first ones, which FastAPI tries
    before any other that could match their paths."""
    routes = [route for route in contacts_router.routes if isinstance(route, APIRoute)]
    leading = routes[: len(EXPRESS)]
    if [route.endpoint for route in leading] != list(EXPRESS):
        raise RuntimeError("the express lane's endpoints must be the first the router declares")
    return leading


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing connects until the first request."""
    settings = settings or Settings()
    db = Database(settings.database_url, pool_size=settings.db_pool_size)

    limiter = build_limiter(settings.redis_url, settings.rate_limit_window_seconds)

    exports = ExportWorker(db, settings.export_dir, settings.export_poll_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(exports.run_forever(), name="export worker")
        yield
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        await limiter.close()
        await db.dispose()

    app = FastAPI(
        title="contactbase",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = Metrics()
    app.state.limiter = limiter
    app.state.exports = exports
    app.state.schema_head = schema_head()
    app.state.signing_key = settings.secret_key.encode() if settings.secret_key else None
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        return complete_document(build_openapi())

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(contacts_router)
    app.include_router(operations_router)
    for error in (DomainError, RequestValidationError, HTTPException):
        app.add_exception_handler(error, answer_error)
    # Added first, so RequestContext wraps it.
    app.add_middleware(ExpressLane, routes=express_routes(), answer_error=answer_error)
    app.add_middleware(
        RequestContext, max_body_bytes=settings.max_body_bytes, metrics=app.state.metrics
    )
    return app

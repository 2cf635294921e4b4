"""The HTTP application: create_app(settings) wires the public API's dispatcher, the operations
routes, middleware and the error handler."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp

from contactbase import __version__, idempotency, logs
from contactbase.contacts import changes
from contactbase.contacts.export_worker import ExportWorker
from contactbase.contacts.router import API_BASE, api
from contactbase.db import Database
from contactbase.dispatch import Dispatcher, error_response
from contactbase.docs_pages import add_docs_pages
from contactbase.errors import ApiError, MethodNotAllowed, NotFound
from contactbase.metrics import Metrics
from contactbase.middleware import RequestContext, write_to_stdout
from contactbase.migrations import schema_head
from contactbase.openapi import complete_document
from contactbase.operations import router as operations_router
from contactbase.ratelimit import build_limiter
from contactbase.settings import Settings
from contactbase.spaces.keycache import KeyCache
from contactbase.state import AppState, state_of
from contactbase.validation import invalid_input
from contactbase.webhooks import queue as webhook_queue
from contactbase.webhooks.worker import WebhookWorker

log = logging.getLogger("contactbase")

DESCRIPTION = """
A self-hostable contacts API that speaks the wire format of Cometly's public contacts API.

Authenticate with `Authorization: Bearer cb_…` (a key from `contactbase key create`).
Every error is JSON with a `message`, a `code` and the `request_id`; a 422 adds `errors` by
field path.
"""


def as_api_error(exc: Exception) -> ApiError:
    """FastAPI's and Starlette's own refusals (of the routes they serve) as our errors."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        return invalid_input(list(exc.errors()))
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        return MethodNotAllowed([method.strip() for method in allow.split(",") if method])
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        return NotFound("Not found.")
    raise exc


async def answer_error(request: Request, exc: Exception) -> Response:
    """The error answers of the routes FastAPI serves, by the one renderer."""
    return error_response(as_api_error(exc), request.scope)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; nothing connects until the first request."""
    settings = settings or Settings()
    logs.install()
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    metrics = Metrics()
    if db.embedded is not None:
        metrics.watch(db.embedded)
    state = AppState(
        settings=settings,
        db=db,
        metrics=metrics,
        limiter=build_limiter(settings.redis_url, settings.rate_limit_window_seconds),
        exports=ExportWorker(
            db, settings.export_dir, settings.export_poll_seconds, settings.export_max_bytes
        ),
        webhooks=WebhookWorker(db, settings, metrics),
        schema_head=schema_head(),
        keys=KeyCache(),
        signing_key=settings.secret_key.encode() if settings.secret_key else None,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(state.exports.run_forever(), name="export worker"),
            asyncio.create_task(state.webhooks.run_forever(), name="webhook worker"),
            asyncio.create_task(housekeeping(db, settings), name="housekeeping"),
        ]
        # What exists once the app is up (modules, models, compiled statements) lives as long
        # as the process: out of the garbage collector's sight, whose full collections no longer
        # walk it (a quarter of a 1,000-contact batch's time; docs/performance.md).
        gc.freeze()
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await close(app)

    app = App(
        title="contactbase",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs and /redoc are contactbase's own (docs_pages.py): FastAPI's load from a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,  # no OAuth2 here: a page without a use
        # FastAPI's own OpenTelemetry spans and metrics: without a provider configured they
        # record nothing, at a cost on every request; the public API's requests never reach
        # FastAPI's routing anyway. /metrics is the service's instrument.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        openapi_url="/openapi.json",
        # No redirect to the path with(out) its slash: Starlette builds it from the Host header,
        # which a client chooses (a link to another site); such a path is a 404.
        redirect_slashes=False,
        servers=[{"url": settings.public_url}] if settings.public_url else None,
    )
    app.state.contactbase = state
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_document(build_openapi(), api)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(operations_router)
    add_docs_pages(app)
    for error in (ApiError, RequestValidationError, HTTPException):
        app.add_exception_handler(error, answer_error)
    return app


async def housekeeping(db: Database, settings: Settings) -> None:
    """Every few minutes: delete the expired Idempotency-Key answers, and the change feed's
    events and the settled webhook messages past the feed's retention. A round that fails
    (the database away) is tried again."""
    while True:
        try:
            await idempotency.sweep(db)
            await changes.sweep(db, settings.changes_retention_seconds)
            await webhook_queue.sweep(db, settings.changes_retention_seconds)
        except Exception as exc:
            log.warning("housekeeping failed: %r", exc)
        await asyncio.sleep(idempotency.SWEEP_SECONDS)


class App(FastAPI):
    """FastAPI, inside the layers every request meets first: RequestContext (request id, body
    limit, metrics, access log, the last word on failures), then the public API's dispatcher.
    The public API's requests never reach FastAPI's own middleware (its cost is in
    docs/performance.md); everything else goes on to it."""

    def build_middleware_stack(self) -> ASGIApp:
        state = state_of(self)
        settings = state.settings
        fastapi = super().build_middleware_stack()
        # RequestContext takes the place of Starlette's outermost layer, ServerErrorMiddleware,
        # as the last word on failures (a JSON 500 or 503 with the request id).
        if isinstance(fastapi, ServerErrorMiddleware):
            fastapi = fastapi.app
        return RequestContext(
            Dispatcher(fastapi, api=api),
            max_body_bytes=settings.max_body_bytes,
            larger_bodies={f"{API_BASE}/contacts/batch": settings.max_batch_bytes},
            metrics=state.metrics,
            access_log=write_to_stdout if settings.access_log else None,
            limit_concurrency=settings.limit_concurrency,
        )


async def close(app: FastAPI) -> None:
    """Close what the app holds: the limiter's connection and the database's pools."""
    state = state_of(app)
    await state.limiter.close()
    await state.db.dispose()

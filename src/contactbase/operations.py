"""Endpoints for operators: liveness, readiness and metrics. None needs a key."""

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from contactbase.db import (
    MIGRATE,
    Database,
    Problem,
    explain,
    postgres_read_only,
    sqlite_problem,
)
from contactbase.dispatch import error_response
from contactbase.errors import SchemaOutdated, ServiceUnavailable
from contactbase.openapi import ErrorBody
from contactbase.state import state_of

router = APIRouter(tags=["operations"])
# Longest wait for the database's answer: a probe, or `serve` at start, must not hang.
CHECK_SECONDS = 5.0


async def readiness(db: Database, head: str | None) -> Problem | None:
    """Why the database cannot serve this version (missing, read-only, unreachable, without
    this version's schema), or None. /readyz asks, and `serve` before it starts."""
    if (problem := sqlite_problem(db.url)) is not None:
        return problem  # asked first: opening a missing SQLite file would create it
    try:
        async with asyncio.timeout(CHECK_SECONDS), db.engine.connect() as connection:
            current = (
                await connection.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
            read_only = (
                not db.is_sqlite
                and (await connection.execute(text("SHOW transaction_read_only"))).scalar_one()
                == "on"
            )
    except Exception as exc:
        return explain(exc, db.url) or Problem(
            "database_unavailable",
            "The database failed the readiness check.",
            f"The database failed the readiness check ({type(exc).__name__}: {exc}).",
        )
    if read_only:
        return postgres_read_only(db.url)
    if current != head:
        outdated = f"The schema is at {current or 'none'}, this version needs {head}: {MIGRATE}."
        return Problem("schema_outdated", outdated, outdated)
    return None


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database answers, writable, and its schema is current",
    responses={
        503: {
            "model": ErrorBody,
            "description": "`database_unavailable`: unreachable, missing or read-only; "
            "`schema_outdated`: not migrated, or migrated to another version's schema",
        }
    },
)
async def readyz(request: Request) -> Response:
    """200 when the database answers, can be written and is migrated to this version's
    schema; else 503 naming the cause."""
    state = state_of(request)
    problem = await readiness(state.db, state.schema_head)
    if problem is None:
        return JSONResponse({"status": "ok", "schema": state.schema_head})
    kind = SchemaOutdated if problem.code == SchemaOutdated.code else ServiceUnavailable
    return error_response(kind(problem.public, status="unavailable"), request.scope)


@router.get("/metrics", summary="Prometheus metrics of this worker", response_class=Response)
async def metrics(request: Request) -> Response:
    """Request counts and latencies by route and status, and 503s for an unavailable database."""
    return Response(
        generate_latest(state_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )

"""Endpoints for operators: liveness, readiness and metrics. None needs a key."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from contactbase.dispatch import error_response
from contactbase.errors import SchemaOutdated, ServiceUnavailable
from contactbase.openapi import ErrorBody
from contactbase.state import state_of

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database answers and its schema is current",
    responses={
        503: {
            "model": ErrorBody,
            "description": "`database_unavailable`: unreachable or not migrated; "
            "`schema_outdated`: migrated to another version's schema",
        }
    },
)
async def readyz(request: Request) -> Response:
    """200 when the database answers and is migrated to this version's schema, else 503."""
    state = state_of(request)
    try:
        async with state.db.engine.connect() as connection:
            current = (
                await connection.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
    except Exception:
        return error_response(
            ServiceUnavailable(
                "The database is unreachable or not migrated (run `contactbase migrate`).",
                status="unavailable",
            ),
            request.scope,
        )
    if current != state.schema_head:
        return error_response(
            SchemaOutdated(
                f"The schema is at {current}, "
                f"this version needs {state.schema_head}: run `contactbase migrate`.",
                status="unavailable",
            ),
            request.scope,
        )
    return JSONResponse({"status": "ok", "schema": current})


@router.get("/metrics", summary="Prometheus metrics of this worker", response_class=Response)
async def metrics(request: Request) -> Response:
    """Request counts and latencies by route and status, and 503s for an unavailable database."""
    return Response(
        generate_latest(state_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )

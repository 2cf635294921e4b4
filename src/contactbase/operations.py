"""Endpoints for operators: liveness, readiness and metrics. None needs a key."""

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from contactbase.db import Database

router = APIRouter(tags=["operations"])


def migrations_config(database_url: str | None = None) -> Config:
    """Alembic's configuration for the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", "contactbase:migrations")
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def schema_head() -> str | None:
    return ScriptDirectory.from_config(migrations_config()).get_current_head()


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the database answers and its schema is current",
    responses={503: {"description": "Database unreachable or schema not current"}},
)
async def readyz(request: Request) -> JSONResponse:
    """200 when the database answers and is migrated to this version's schema, else 503."""
    db: Database = request.app.state.db
    head: str | None = request.app.state.schema_head
    try:
        async with db.engine.connect() as connection:
            current = (
                await connection.execute(text("SELECT version_num FROM alembic_version"))
            ).scalar_one_or_none()
    except Exception:
        return JSONResponse(
            {
                "status": "unavailable",
                "message": "The database is unreachable "
                "or not migrated (run `contactbase migrate`).",
            },
            status_code=503,
        )
    if current != head:
        return JSONResponse(
            {
                "status": "unavailable",
                "message": f"The schema is at {current}, "
                f"this version needs {head}: run `contactbase migrate`.",
            },
            status_code=503,
        )
    return JSONResponse({"status": "ok", "schema": current})


@router.get("/metrics", summary="Prometheus metrics of this worker", response_class=Response)
async def metrics(request: Request) -> Response:
    """Request counts and latencies by route and status, and 503s for an unavailable database."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )

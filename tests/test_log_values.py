"""No contact value reaches a log line or an error text (issue 16, findings 10 and 12): not a
statement's bound parameters, not PostgreSQL's DETAIL naming the values a constraint refused."""

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from contactbase.app import close, create_app
from contactbase.db import Database
from contactbase.settings import Settings

SECRET = "secret.person@example.com"


@pytest.fixture
async def violating(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """An app with a route that meets an unexpected unique violation of an email, bound as a
    parameter, on the real database."""
    app = create_app(settings)

    @app.get("/violate")
    async def violate() -> None:
        async with db.writer() as session, session.begin():
            await session.execute(text("CREATE TEMPORARY TABLE people (email TEXT UNIQUE)"))
            insert = text("INSERT INTO people (email) VALUES (:email)")
            await session.execute(insert, {"email": SECRET})
            await session.execute(insert, {"email": SECRET})

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
    await close(app)


async def test_a_constraint_error_logs_no_value(
    violating: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, is_postgres: bool
) -> None:
    with caplog.at_level(logging.INFO):
        response = await violating.get("/violate")
    assert response.status_code == 500
    assert SECRET not in response.text
    logged = caplog.text
    assert "IntegrityError" in logged  # the failure is in the log, with its traceback
    assert SECRET not in logged
    if is_postgres:
        assert "DETAIL: (left out: it may hold values)" in logged

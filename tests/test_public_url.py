"""Links in answers come from CONTACTBASE_PUBLIC_URL, never from the Host header a client
chose (issue 16, finding 3); without it, from the request, as before."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from contactbase.app import close, create_app
from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.state import state_of
from tests.contacts.test_exports import EXPORTS, poll, queue
from tests.factories import CONTACTS, make_tenant

PUBLIC = "https://contacts.example.com/crm"
EVIL = {"host": "evil.example.net", "x-forwarded-proto": "http"}


@pytest.fixture
async def public_app(db: Database, settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(Settings(**{**settings.model_dump(), "public_url": PUBLIC + "/"}))
    yield app
    await close(app)


async def test_links_come_from_the_public_url(db: Database, public_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=public_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        auth = await make_tenant(db)
        for n in range(3):
            await client.post(CONTACTS, json={"emails": [f"p{n}@example.com"]}, headers=auth)
        page = (await client.get(f"{CONTACTS}?per_page=1", headers={**auth, **EVIL})).json()
        assert page["path"] == f"{PUBLIC}/public-api/v1/contacts"
        assert page["next_page_url"].startswith(f"{PUBLIC}/public-api/v1/contacts?per_page=1&")
        export_id = await queue(client, auth)
        assert await state_of(public_app).exports.run_once()
        response = await client.get(f"{EXPORTS}/{export_id}", headers={**auth, **EVIL})
        assert response.json()["download_url"].startswith(f"{PUBLIC}/public-api/v1/contacts/")
        document = (await client.get("/openapi.json")).json()
        assert document["servers"] == [{"url": PUBLIC}]


async def test_without_it_links_follow_the_request(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    await client.post(CONTACTS, json={"emails": ["ada@example.com"]}, headers=auth)
    page = (await client.get(CONTACTS, headers=auth)).json()
    assert page["path"] == "http://testserver/public-api/v1/contacts"
    export_id = await queue(client, auth)
    assert (await poll(client, auth, export_id))["status"] == "queued"


async def test_a_trailing_slash_is_not_redirected_to_the_host_sent(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    for path in (f"{CONTACTS}/", "/docs/", "/healthz/"):
        response = await client.get(path, headers={**auth, **EVIL})
        assert response.status_code == 404
        assert "location" not in response.headers


@pytest.mark.parametrize(
    "url", ["ftp://contacts.example.com", "contacts.example.com", "https://x.example/?a=1"]
)
def test_a_bad_public_url_is_refused_naming_the_setting(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTACTBASE_PUBLIC_URL", url)
    with pytest.raises(ValidationError, match="public_url"):
        Settings()


def test_a_short_secret_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTACTBASE_SECRET_KEY", "x" * 31)
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings()
    monkeypatch.setenv("CONTACTBASE_SECRET_KEY", "x" * 32)
    assert Settings().secret_key == "x" * 32

"""DELETE /contacts/{id} and `contactbase contact erase` (SPEC 6.4): the person, every alias and
every value gone, the ids 404, the emails free, a tombstone without values, the idempotent
answers that name them forgotten; final when writes of the same emails race it."""

import asyncio
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from contactbase.cli import app as cli
from contactbase.contacts.models import Tombstone
from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.spaces.service import DEFAULT_PERMISSIONS
from tests.factories import (
    CONTACTS,
    answered,
    bearer,
    make_key,
    make_space,
    make_tenant,
    table_counts,
)

ADA = {
    "emails": ["ada@example.com", "ada.l@example.org"],
    "phones": ["+44 20 7946 0958"],
    "names": ["Ada Lovelace"],
    "locations": ["London"],
    "custom_fields": {"profile_field_1": "VIP"},
}


async def tombstones(db: Database) -> list[int]:
    async with db.reader() as session:
        return sorted((await session.scalars(select(Tombstone.contact_id))).all())


async def test_an_erased_person_is_gone_and_the_emails_free(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    ada = (await client.post(CONTACTS, json=ADA, headers=auth)).json()
    alias = (
        await client.post(CONTACTS, json={"emails": ["countess@example.com"]}, headers=auth)
    ).json()
    merged = await client.post(
        CONTACTS, json={"emails": ["countess@example.com", "ada@example.com"]}, headers=auth
    )
    assert merged.json()["id"] == ada["id"]
    other = (await client.post(CONTACTS, json={"emails": ["bob@example.com"]}, headers=auth)).json()
    # Erased through the alias: the contact it names goes, and the alias with it.
    response = await client.delete(f"{CONTACTS}/{alias['id']}", headers=auth)
    assert response.status_code == 204
    assert response.content == b""
    for gone in (ada["id"], alias["id"]):
        missing = await client.get(f"{CONTACTS}/{gone}", headers=auth)
        assert missing.status_code == 404
    assert (await client.delete(f"{CONTACTS}/{ada['id']}", headers=auth)).status_code == 404
    assert await table_counts(db) == {
        "contacts": 1,
        "emails": 1,
        "phones": 0,
        "names": 0,
        "locations": 0,
    }
    assert await tombstones(db) == sorted([ada["id"], alias["id"]])
    again = await client.post(CONTACTS, json={"emails": ["ada@example.com"]}, headers=auth)
    assert again.status_code == 201
    assert again.json()["id"] > other["id"]
    assert again.json()["names"] == []


async def test_erasing_needs_its_own_permission(client: httpx.AsyncClient, db: Database) -> None:
    space = await make_space(db)
    default = bearer(await make_key(db, space, DEFAULT_PERMISSIONS))
    ada = (await client.post(CONTACTS, json=ADA, headers=default)).json()
    refused = await client.delete(f"{CONTACTS}/{ada['id']}", headers=default)
    assert refused.status_code == 403
    assert answered(refused) == {"message": "This API key lacks the contacts:delete permission."}
    assert (await client.get(f"{CONTACTS}/{ada['id']}", headers=default)).status_code == 200
    assert "contacts:delete" not in DEFAULT_PERMISSIONS


async def test_erasure_forgets_the_idempotent_answers_that_name_the_person(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    keyed = {**auth, "Idempotency-Key": "signup"}
    first = (await client.post(CONTACTS, json=ADA, headers=keyed)).json()
    batch = {"contacts": [{"emails": ["ada@example.com"]}, {"emails": ["bob@example.com"]}]}
    await client.post(f"{CONTACTS}/batch", json=batch, headers={**auth, "Idempotency-Key": "b"})
    await client.post(
        CONTACTS, json={"emails": ["cy@example.com"]}, headers={**auth, "Idempotency-Key": "cy"}
    )
    assert (await client.delete(f"{CONTACTS}/{first['id']}", headers=auth)).status_code == 204
    async with db.reader() as session:
        kept = sorted((await session.execute(text("SELECT key FROM idempotency_keys"))).scalars())
    assert kept == ["cy"]
    retried = await client.post(CONTACTS, json=ADA, headers=keyed)
    assert retried.status_code == 201
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["id"] != first["id"]


async def test_erasures_have_their_own_rate_limit(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db, limits={})
    response = await client.delete(f"{CONTACTS}/999", headers=auth)
    assert response.status_code == 404
    assert response.headers["RateLimit-Policy"] == '"delete";q=60;w=60'


def run_cli(settings: Settings, *args: str) -> Any:
    env = {"CONTACTBASE_DATABASE_URL": settings.database_url}
    return CliRunner().invoke(cli, list(args), env=env)


async def test_the_cli_erases_by_email_and_reports_counts(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    auth = await make_tenant(db)
    ada = (await client.post(CONTACTS, json=ADA, headers=auth)).json()
    result = await asyncio.to_thread(
        run_cli, settings, "contact", "erase", "1", "--email", "ADA@example.com", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "contact_id": ada["id"],
        "aliases": 0,
        "emails": 2,
        "phones": 1,
        "names": 1,
        "locations": 1,
        "idempotent_answers": 0,
    }
    assert "ada@" not in result.stdout
    again = await asyncio.to_thread(
        run_cli, settings, "contact", "erase", "1", "--id", str(ada["id"])
    )
    assert again.exit_code == 1
    assert again.stderr == f"error: No contact with id {ada['id']}.\n"
    neither = await asyncio.to_thread(run_cli, settings, "contact", "erase", "1")
    assert neither.exit_code == 1
    assert neither.stderr == "error: Give one of --id and --email.\n"


ORIGINAL = "original"  # marks every value the erased person held before the race


@pytest.mark.parametrize("round_number", range(6))
async def test_an_erasure_racing_writes_of_the_same_emails_leaves_nothing_of_the_person(
    client: httpx.AsyncClient, db: Database, round_number: int
) -> None:
    """The person and another contact exist; at once: the erasure, a create with the person's
    email (a merge into them, or after the erasure a new contact), a create that merges the
    person with the other contact, and an update of the person. However they interleave,
    none of the person's values survives anywhere."""
    auth = await make_tenant(db)
    person = {
        "emails": [f"p{round_number}@example.com"],
        "phones": ["+1 555 0100"],
        "names": [f"{ORIGINAL} name"],
        "locations": [f"{ORIGINAL} place"],
    }
    target = (await client.post(CONTACTS, json=person, headers=auth)).json()
    await client.post(
        CONTACTS, json={"emails": ["other@example.com"], "names": ["Other"]}, headers=auth
    )
    email = person["emails"][0]
    racing = [
        client.delete(f"{CONTACTS}/{target['id']}", headers=auth),
        client.post(CONTACTS, json={"emails": [email], "names": ["New name"]}, headers=auth),
        client.post(CONTACTS, json={"emails": ["other@example.com", email]}, headers=auth),
        client.put(f"{CONTACTS}/{target['id']}", json={"locations": ["Moved"]}, headers=auth),
    ]
    if round_number % 2:
        racing.reverse()
    statuses = [response.status_code for response in await asyncio.gather(*racing)]
    assert statuses[0 if round_number % 2 == 0 else 3] == 204
    async with db.reader() as session:
        for table in ("contact_names", "contact_locations", "contact_phones"):
            rows = await session.execute(text(f"SELECT value FROM {table}"))
            assert not [value for (value,) in rows if ORIGINAL in value or "555 0100" in value]
        held = await session.execute(text("SELECT name, location, phone FROM contacts"))
        for row in held:
            assert not any(
                ORIGINAL in (value or "") or "555 0100" in (value or "") for value in row
            )
    assert (await client.get(f"{CONTACTS}/{target['id']}", headers=auth)).status_code == 404

"""Who may call: bearer keys, revocation, inactive Spaces, permissions, check order, tenancy."""

import re
from collections.abc import Sequence

import httpx
import pytest
from sqlalchemy import text

from contactbase.db import Database
from contactbase.spaces import service
from contactbase.spaces.service import PERMISSIONS
from tests.factories import CONTACTS, SEED, answered, bearer, make_key, make_space

UNAUTHENTICATED = {"message": "Unauthenticated."}
UNKNOWN_KEY = "cb_" + "A" * 43
ONE_MIB = 1024 * 1024


async def make_key_with_id(
    db: Database, space_id: int, permissions: Sequence[str] = PERMISSIONS
) -> tuple[int, str]:
    async with db.writer() as session, session.begin():
        key, raw_key = await service.create_key(session, space_id, "test", permissions)
        return key.id, raw_key


async def set_status(db: Database, space_id: int, status: str) -> None:
    async with db.writer() as session, session.begin():
        await service.set_status(session, space_id, status)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": ""}, id="empty-header"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-scheme"),
        pytest.param({"Authorization": "Token " + UNKNOWN_KEY}, id="token-scheme"),
        pytest.param({"Authorization": "Bearer"}, id="bearer-without-key"),
        pytest.param(bearer(UNKNOWN_KEY), id="unknown-key"),
        pytest.param(bearer("not-a-key"), id="malformed-no-prefix"),
        pytest.param(bearer("cb_short"), id="malformed-too-short"),
        pytest.param(bearer("cb_" + "A" * 500), id="malformed-too-long"),
    ],
)
async def test_missing_or_bad_credentials_are_401(
    client: httpx.AsyncClient, db: Database, headers: dict[str, str]
) -> None:
    await make_key(db, await make_space(db))
    for response in (
        await client.get(CONTACTS, headers=headers),
        await client.get(f"{CONTACTS}/1", headers=headers),
        await client.post(CONTACTS, json=SEED, headers=headers),
    ):
        assert response.status_code == 401
        assert answered(response) == UNAUTHENTICATED


async def test_known_key_with_another_scheme_is_401(
    client: httpx.AsyncClient, db: Database
) -> None:
    key = await make_key(db, await make_space(db))
    response = await client.get(CONTACTS, headers={"Authorization": f"Basic {key}"})
    assert response.status_code == 401
    assert answered(response) == UNAUTHENTICATED
    assert (await client.get(CONTACTS, headers=bearer(key))).status_code == 200


async def test_revoked_key_is_refused_on_the_next_request(
    client: httpx.AsyncClient, db: Database
) -> None:
    space_id = await make_space(db)
    key_id, key = await make_key_with_id(db, space_id)
    _other_id, other = await make_key_with_id(db, space_id)
    assert (await client.get(CONTACTS, headers=bearer(key))).status_code == 200
    async with db.writer() as session, session.begin():
        revoked = await service.revoke_key(session, key_id)
        assert revoked.revoked_at is not None
    response = await client.get(CONTACTS, headers=bearer(key))
    assert response.status_code == 401
    assert answered(response) == UNAUTHENTICATED
    created = await client.post(CONTACTS, json=SEED, headers=bearer(key))
    assert created.status_code == 401
    assert (await client.get(CONTACTS, headers=bearer(other))).status_code == 200


async def test_inactive_space_is_403_until_reactivated(
    client: httpx.AsyncClient, db: Database
) -> None:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    assert (await client.post(CONTACTS, json=SEED, headers=auth)).status_code == 201
    await set_status(db, space_id, "inactive")
    for response in (
        await client.get(CONTACTS, headers=auth),
        await client.get(f"{CONTACTS}/1", headers=auth),
        await client.post(CONTACTS, json=SEED, headers=auth),
    ):
        assert response.status_code == 403
        assert list(answered(response)) == ["message"]
        assert "subscription is inactive" in response.json()["message"]
    await set_status(db, space_id, "active")
    assert (await client.get(f"{CONTACTS}/1", headers=auth)).status_code == 200
    assert (await client.post(CONTACTS, json=SEED, headers=auth)).status_code == 200


async def test_read_only_key_cannot_write(client: httpx.AsyncClient, db: Database) -> None:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id, ["contacts:read"]))
    response = await client.post(CONTACTS, json=SEED, headers=auth)
    assert response.status_code == 403
    assert list(answered(response)) == ["message"]
    assert "contacts:write" in response.json()["message"]
    listed = await client.get(CONTACTS, headers=auth)
    assert listed.status_code == 200
    assert listed.json()["data"] == []
    assert (await client.get(f"{CONTACTS}/1", headers=auth)).status_code == 404


async def test_write_only_key_cannot_read(client: httpx.AsyncClient, db: Database) -> None:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id, ["contacts:write"]))
    created = await client.post(CONTACTS, json=SEED, headers=auth)
    assert created.status_code == 201
    for path in (CONTACTS, f"{CONTACTS}/{created.json()['id']}"):
        response = await client.get(path, headers=auth)
        assert response.status_code == 403
        assert list(answered(response)) == ["message"]
        assert "contacts:read" in response.json()["message"]


async def test_oversized_body_is_413_before_401(client: httpx.AsyncClient, db: Database) -> None:
    body = b'{"emails": ["' + b"a" * ONE_MIB + b'@example.com"]}'
    headers = {"Content-Type": "application/json"}
    for auth in ({}, bearer(UNKNOWN_KEY)):
        response = await client.post(CONTACTS, content=body, headers={**headers, **auth})
        assert response.status_code == 413
        assert list(answered(response)) == ["message"]


async def test_body_at_the_limit_is_read(client: httpx.AsyncClient, db: Database) -> None:
    body = b" " * ONE_MIB
    response = await client.post(
        CONTACTS, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert answered(response) == UNAUTHENTICATED


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="malformed-json"),
        pytest.param(b'{"emails": "x", "phone": []}', id="wrong-types"),
        pytest.param(b"{}", id="missing-emails"),
    ],
)
async def test_bad_body_without_a_valid_key_is_401_not_422(
    client: httpx.AsyncClient, db: Database, body: bytes
) -> None:
    headers = {"Content-Type": "application/json"}
    for auth in ({}, bearer(UNKNOWN_KEY), bearer("garbage")):
        response = await client.post(CONTACTS, content=body, headers={**headers, **auth})
        assert response.status_code == 401
        assert answered(response) == UNAUTHENTICATED


async def test_bad_query_without_a_key_is_401_not_422(
    client: httpx.AsyncClient, db: Database
) -> None:
    for path in (f"{CONTACTS}?per_page=0&bogus=1", f"{CONTACTS}/abc", f"{CONTACTS}/0"):
        response = await client.get(path)
        assert response.status_code == 401
        assert answered(response) == UNAUTHENTICATED


async def test_forbidden_comes_before_invalid_input(
    client: httpx.AsyncClient, db: Database
) -> None:
    space_id = await make_space(db)
    read_only = bearer(await make_key(db, space_id, ["contacts:read"]))
    write_only = bearer(await make_key(db, space_id, ["contacts:write"]))
    bad_body = {"Content-Type": "application/json"}
    response = await client.post(CONTACTS, content=b"{nope", headers={**bad_body, **read_only})
    assert response.status_code == 403
    assert "contacts:write" in response.json()["message"]
    response = await client.get(f"{CONTACTS}?per_page=0&bogus=1", headers=write_only)
    assert response.status_code == 403
    assert "contacts:read" in response.json()["message"]
    response = await client.get(f"{CONTACTS}/abc", headers=write_only)
    assert response.status_code == 403
    full = bearer(await make_key(db, space_id))
    await set_status(db, space_id, "inactive")
    response = await client.post(CONTACTS, content=b"{nope", headers={**bad_body, **full})
    assert response.status_code == 403
    assert "subscription is inactive" in response.json()["message"]


async def test_keys_are_stored_hashed(db: Database) -> None:
    space_id = await make_space(db)
    key_id, key = await make_key_with_id(db, space_id)
    async with db.reader() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).mappings().all()
    assert len(rows) == 1
    row = dict(rows[0])
    assert row["id"] == key_id
    assert row["key_hash"] != key
    assert row["key_hash"] == service.hash_key(key)
    assert key.startswith(row["prefix"])
    assert len(row["prefix"]) < len(key) // 2
    for value in row.values():
        assert key not in str(value)
        assert key[3:] not in str(value)


async def test_key_format(db: Database) -> None:
    space_id = await make_space(db)
    keys = {await make_key(db, space_id) for _ in range(5)}
    assert len(keys) == 5
    for key in keys:
        assert re.fullmatch(r"cb_[A-Za-z0-9_-]{43,}", key), key


async def test_same_email_in_two_spaces_is_two_contacts(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth_a = bearer(await make_key(db, await make_space(db, "A")))
    auth_b = bearer(await make_key(db, await make_space(db, "B")))
    in_b = await client.post(CONTACTS, json={**SEED, "names": ["In B"]}, headers=auth_b)
    assert in_b.status_code == 201
    in_a = await client.post(CONTACTS, json={"emails": [SEED["emails"][0]]}, headers=auth_a)
    assert in_a.status_code == 201
    assert in_a.json()["id"] != in_b.json()["id"]
    assert in_a.json()["emails"] == [SEED["emails"][0]]
    assert in_a.json()["names"] == []
    b_id, a_id = in_b.json()["id"], in_a.json()["id"]
    assert (await client.get(f"{CONTACTS}/{b_id}", headers=auth_a)).status_code == 404
    assert (await client.get(f"{CONTACTS}/{a_id}", headers=auth_b)).status_code == 404
    unchanged = await client.get(f"{CONTACTS}/{b_id}", headers=auth_b)
    assert answered(unchanged) == in_b.json()
    listed_a = (await client.get(CONTACTS, headers=auth_a)).json()["data"]
    assert [item["id"] for item in listed_a] == [a_id]

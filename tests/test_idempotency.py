"""Idempotency-Key (SPEC 6.2) on POST /contacts, /contacts/batch and /contacts/exports: a retry
gets the stored answer and changes nothing; another request with the key is refused; a request
in flight holds its key; the answer is stored with the effect or not at all."""

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text, update

from contactbase import idempotency
from contactbase.contacts.models import Contact, Export, IdempotentRequest
from contactbase.db import Database, utcnow
from contactbase.state import state_of
from tests.factories import CONTACTS, SEED, answered, make_tenant, until_waiting_on_a_lock

BATCH = f"{CONTACTS}/batch"
EXPORTS = f"{CONTACTS}/exports"


def keyed(auth: dict[str, str], key: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


async def count(db: Database, model: Any) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def stored_keys(db: Database) -> list[tuple[str, int | None]]:
    async with db.reader() as session:
        rows = await session.execute(select(IdempotentRequest.key, IdempotentRequest.status))
        return sorted((key, status) for key, status in rows.all())


async def test_a_retry_gets_the_stored_answer_and_changes_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = keyed(await make_tenant(db), "create-1")
    first = await client.post(CONTACTS, json=SEED, headers=auth)
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    # The same body with its keys in another order and other whitespace is the same request.
    reordered = orjson.dumps(dict(reversed(list(SEED.items()))), option=orjson.OPT_INDENT_2)
    again = await client.post(
        CONTACTS, content=reordered, headers={**auth, "Content-Type": "application/json"}
    )
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["x-request-id"] != first.headers["x-request-id"]
    assert await count(db, Contact) == 1
    assert await stored_keys(db) == [("create-1", 201)]


async def test_the_same_key_with_another_request_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = keyed(await make_tenant(db), "k")
    assert (await client.post(CONTACTS, json=SEED, headers=auth)).status_code == 201
    for path, body in [
        (CONTACTS, {**SEED, "names": ["Someone else"]}),
        (f"{CONTACTS}?on_conflict=error", SEED),
        (BATCH, {"contacts": [SEED]}),
    ]:
        response = await client.post(path, json=body, headers=auth)
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_mismatch"
        assert answered(response)["message"].startswith("This Idempotency-Key was used with")
    assert await count(db, Contact) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
async def test_a_malformed_key_is_422_and_nothing_runs(
    client: httpx.AsyncClient, db: Database, key: str
) -> None:
    auth = await make_tenant(db)
    headers: dict[str, Any] = {**auth, "Idempotency-Key": key.encode()}
    response = await client.post(CONTACTS, json=SEED, headers=headers)
    assert response.status_code == 422
    assert list(answered(response)["errors"]) == ["Idempotency-Key"]
    assert await count(db, Contact) == 0
    assert await stored_keys(db) == []


async def test_a_key_of_255_printable_characters_is_accepted(
    client: httpx.AsyncClient, db: Database
) -> None:
    key = ("~ !" * 100)[:255]
    auth = keyed(await make_tenant(db), key)
    assert (await client.post(CONTACTS, json=SEED, headers=auth)).status_code == 201
    assert await stored_keys(db) == [(key, 201)]


async def test_keys_are_scoped_to_the_space(client: httpx.AsyncClient, db: Database) -> None:
    one = keyed(await make_tenant(db, "One"), "shared")
    two = keyed(await make_tenant(db, "Two"), "shared")
    first = await client.post(CONTACTS, json=SEED, headers=one)
    second = await client.post(CONTACTS, json=SEED, headers=two)
    assert (first.status_code, second.status_code) == (201, 201)
    assert "idempotent-replayed" not in second.headers
    assert first.json()["id"] != second.json()["id"]


async def test_a_conflict_is_stored_and_a_refusal_is_not(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    await client.post(CONTACTS, json=SEED, headers=auth)
    conflict = await client.post(
        f"{CONTACTS}?on_conflict=error", json=SEED, headers=keyed(auth, "conflict")
    )
    replayed = await client.post(
        f"{CONTACTS}?on_conflict=error", json=SEED, headers=keyed(auth, "conflict")
    )
    assert (conflict.status_code, replayed.status_code) == (409, 409)
    assert replayed.headers["idempotent-replayed"] == "true"
    assert answered(replayed) == answered(conflict)  # each names its own request id
    # A batch refused under atomic=true changed nothing: not stored, the key free again.
    body = {"contacts": [{"emails": ["new@example.com"]}, {"emails": ["bad"]}]}
    for _ in range(2):
        refused = await client.post(
            f"{BATCH}?atomic=true", json=body, headers=keyed(auth, "atomic")
        )
        assert refused.status_code == 422
        assert "idempotent-replayed" not in refused.headers
    assert await stored_keys(db) == [("conflict", 409)]


async def test_batches_and_exports_are_replayed(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    body = {"contacts": [SEED, {"emails": ["x@example.com"]}, {"emails": ["bad"]}]}
    first = await client.post(BATCH, json=body, headers=keyed(auth, "batch"))
    again = await client.post(BATCH, json=body, headers=keyed(auth, "batch"))
    assert (first.status_code, again.status_code) == (207, 207)
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    window = {"start_date": "2026-01-01 00:00:00", "end_date": "2026-12-31 23:59:59"}
    queued = await client.post(EXPORTS, json=window, headers=keyed(auth, "export"))
    requeued = await client.post(EXPORTS, json=window, headers=keyed(auth, "export"))
    assert (queued.status_code, requeued.status_code) == (202, 202)
    assert requeued.json()["export_id"] == queued.json()["export_id"]
    assert await count(db, Export) == 1
    assert await count(db, Contact) == 2


async def hold_writes(db: Database) -> Any:
    """A transaction of the test's that the requests' contact writes wait for: on PostgreSQL a
    lock on the email table (the key's marker, in its own table, is not held up); on SQLite
    the file's write lock (so every write waits, the markers' too)."""
    session = db.writer()
    await session.begin()
    if db.is_sqlite:
        await session.execute(text("DELETE FROM contact_emails WHERE 0"))
    else:
        await session.execute(text("LOCK TABLE contact_emails IN SHARE MODE"))
    return session


async def test_a_request_in_flight_holds_its_key(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    """The first request is held in flight (its write waits on the test's lock); the second,
    with the same key, is answered 409 at once, without waiting for the first; once the first
    is answered, a third gets its answer."""
    auth = keyed(await make_tenant(db), "in-flight")
    embedded = state_of(app).db.embedded
    holder = await hold_writes(db)
    try:
        first = asyncio.ensure_future(client.post(CONTACTS, json=SEED, headers=auth))
        if embedded is None:
            await until_waiting_on_a_lock(app, db)
            assert await stored_keys(db) == [("in-flight", None)]  # written before the wait
            began = time.monotonic()
            second = await client.post(CONTACTS, json=SEED, headers=auth)
            assert time.monotonic() - began < 5  # the first still waits on the lock
            assert not first.done()
        else:
            # SQLite: both markers wait for the write lock; the first is written first, and
            # the second is looked at before the first's contact is written.
            await until_waiting_on_a_lock(app, db)
            pending = asyncio.ensure_future(client.post(CONTACTS, json=SEED, headers=auth))
            await until_waiting_on_a_lock(app, db, 2)
            await holder.rollback()
            second = await pending
    finally:
        await holder.close()
    assert second.status_code == 409
    assert answered(second)["message"].startswith("A request with this Idempotency-Key is still")
    assert second.headers["retry-after"] == "1"
    assert (await first).status_code == 201
    third = await client.post(CONTACTS, json=SEED, headers=auth)
    assert third.status_code == 201
    assert third.headers["idempotent-replayed"] == "true"
    assert await count(db, Contact) == 1


async def write_marker(db: Database, space_id: int, key: str, body: bytes, age: int) -> None:
    """The marker a request leaves on receipt, as a process that died `age` seconds after
    writing it would have left it."""
    print_ = idempotency.fingerprint("POST", CONTACTS, [], body)
    expires_at = utcnow() + timedelta(seconds=idempotency.MARKER_SECONDS - age)
    async with db.writer() as session, session.begin():
        session.add(
            IdempotentRequest(space_id=space_id, key=key, fingerprint=print_, expires_at=expires_at)
        )


async def test_the_marker_of_a_dead_process_lapses_after_60_seconds(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    body = orjson.dumps(SEED)
    headers = {**auth, "Content-Type": "application/json"}
    await write_marker(db, 1, "young", body, age=50)
    await write_marker(db, 1, "old", body, age=61)
    young = await client.post(
        CONTACTS, content=body, headers={**headers, "Idempotency-Key": "young"}
    )
    assert young.status_code == 409
    assert young.json()["code"] == "idempotency_in_flight"
    old = await client.post(CONTACTS, content=body, headers={**headers, "Idempotency-Key": "old"})
    assert old.status_code == 201
    assert await stored_keys(db) == [("old", 201), ("young", None)]


async def test_answers_expire_and_are_swept(client: httpx.AsyncClient, db: Database) -> None:
    auth = keyed(await make_tenant(db), "ttl")
    assert (await client.post(CONTACTS, json=SEED, headers=auth)).status_code == 201
    async with db.writer() as session, session.begin():
        expires_at = await session.scalar(select(IdempotentRequest.expires_at))
        assert expires_at is not None
        assert timedelta(hours=23, minutes=59) < expires_at - utcnow() <= timedelta(hours=24)
        await session.execute(update(IdempotentRequest).values(expires_at=utcnow()))
    await idempotency.sweep(db)
    assert await stored_keys(db) == []
    # The key is free again: the same request runs anew (a merge that changes nothing).
    again = await client.post(CONTACTS, json=SEED, headers=auth)
    assert again.status_code == 200
    assert "idempotent-replayed" not in again.headers


async def test_an_answer_that_cannot_be_stored_leaves_no_effect(
    client: httpx.AsyncClient, db: Database
) -> None:
    """The answer is written in the transaction of the effect: when storing it fails, the
    contact is not written either, and the key is free again."""
    auth = keyed(await make_tenant(db), "doomed")
    async with db.writer() as session, session.begin():
        if db.is_sqlite:
            await session.execute(
                text(
                    "CREATE TRIGGER doomed BEFORE UPDATE ON idempotency_keys"
                    " WHEN NEW.key = 'doomed' BEGIN SELECT RAISE(ABORT, 'doomed'); END"
                )
            )
        else:
            await session.execute(
                text(
                    "CREATE FUNCTION doomed() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN RAISE EXCEPTION 'doomed'; END $$"
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER doomed BEFORE UPDATE ON idempotency_keys FOR EACH ROW"
                    " WHEN (NEW.key = 'doomed') EXECUTE FUNCTION doomed()"
                )
            )
    try:
        response = await client.post(CONTACTS, json=SEED, headers=auth)
        assert response.status_code == 500
        assert await count(db, Contact) == 0
        assert await stored_keys(db) == []
    finally:
        async with db.writer() as session, session.begin():
            await session.execute(
                text("DROP TRIGGER doomed" + ("" if db.is_sqlite else " ON idempotency_keys"))
            )
            if not db.is_sqlite:
                await session.execute(text("DROP FUNCTION doomed()"))


async def test_racing_requests_with_one_key_make_one_contact(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = keyed(await make_tenant(db), "race")
    responses = await asyncio.gather(
        *(client.post(CONTACTS, json=SEED, headers=auth) for _ in range(8))
    )
    kinds = sorted(
        (
            r.status_code,
            r.headers.get("idempotent-replayed"),
            r.json()["code"] if r.status_code == 409 else None,
        )
        for r in responses
    )
    assert kinds.count((201, None, None)) == 1
    assert all(
        kind in {(201, None, None), (201, "true", None), (409, None, "idempotency_in_flight")}
        for kind in kinds
    )
    assert await count(db, Contact) == 1

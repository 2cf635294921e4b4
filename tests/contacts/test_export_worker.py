"""The export worker (durable across restarts, never runs an export twice, retakes abandoned
ones, gives up after MAX_ATTEMPTS, runs in the app's lifespan, cleans up, streams big files) and
the download links it makes possible, which refuse anything but an intact, unexpired signature."""

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select, update

from contactbase.app import close, create_app
from contactbase.contacts.export_worker import ExportWorker
from contactbase.contacts.exports import MAX_ATTEMPTS, sign_download
from contactbase.contacts.models import Contact, ContactEmail, Export
from contactbase.db import Database, utcnow
from contactbase.settings import Settings
from contactbase.state import state_of
from tests.contacts.test_exports import (
    ALL_TIME,
    EXPORTS,
    REFUSED,
    download,
    export,
    invalid,
    line,
    poll,
    queue,
    the_signing_key,
)
from tests.factories import (
    CONTACTS,
    add_contact,
    answered,
    bearer,
    make_key,
    make_space,
    make_tenant,
)

Auth = dict[str, str]


@pytest.fixture
def export_dir(settings: Settings) -> Path:
    return settings.export_dir


def build(settings: Settings, export_dir: Path, **changes: Any) -> FastAPI:
    return create_app(settings.model_copy(update={"export_dir": export_dir, **changes}))


def http(application: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def abandon(db: Database, export_id: str, attempts: int) -> None:
    """As a worker that claimed the export `attempts` times and died leaves it."""
    async with db.writer() as session, session.begin():
        await session.execute(
            update(Export)
            .where(Export.id == export_id)
            .values(
                status="processing",
                lease_until=utcnow() - timedelta(seconds=1),
                attempts=attempts,
            )
        )


async def until_completed(client: httpx.AsyncClient, auth: Auth, export_id: str) -> dict[str, Any]:
    """Poll as a client would until the export completes (or 30 seconds pass: a loaded
    machine may take its time; a hang still fails)."""
    deadline = time.monotonic() + 30
    while True:
        status = await poll(client, auth, export_id)
        if status["status"] != "queued" and status["status"] != "processing":
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)


def files(directory: Path) -> list[str]:
    """The names in the export directory (none before the first file is written)."""
    if not directory.is_dir():
        return []
    return sorted(path.name for path in directory.iterdir())


async def test_an_export_queued_before_a_restart_is_completed_after_it(
    settings: Settings, db: Database, export_dir: Path
) -> None:
    auth = await make_tenant(db)
    before = build(settings, export_dir)
    async with http(before) as client:
        contact = await add_contact(client, auth, {"emails": ["kept@example.com"]})
        export_id = await queue(client, auth)
    await close(before)  # the process ends with the export still queued

    after = build(settings, export_dir, export_poll_seconds=0.05)
    try:
        async with after.router.lifespan_context(after), http(after) as client:
            status = await until_completed(client, auth, export_id)
            assert status["status"] == "completed"
            assert await download(client, status["download_url"]) == [line(contact)]
    finally:
        await close(after)


async def test_two_workers_never_run_one_export_twice(
    client: httpx.AsyncClient, settings: Settings, db: Database, export_dir: Path
) -> None:
    auth = await make_tenant(db)
    contact = await add_contact(client, auth, {"emails": ["once@example.com"]})
    elsewhere = Database(settings.database_url, pool_size=2)  # as a second process would
    try:
        # Two in this process (one engine) and one in another.
        workers = [ExportWorker(base, export_dir) for base in (db, db, elsewhere)]
        for round_ in range(5):
            export_id = await queue(client, auth)
            ran = await asyncio.gather(*(worker.run_once() for worker in workers))
            assert sorted(ran) == [False, False, True], round_
            status = await poll(client, auth, export_id)
            assert status["status"] == "completed"
            assert [name for name in files(export_dir) if name.startswith(export_id)] == [
                f"{export_id}-1.ndjson.gz"
            ]
            assert await download(client, status["download_url"]) == [line(contact)]
        assert len(files(export_dir)) == 5
    finally:
        await elsewhere.dispose()


@pytest.mark.parametrize("attempts", [1, MAX_ATTEMPTS - 1])
async def test_an_abandoned_export_is_taken_up_again(
    client: httpx.AsyncClient, app: FastAPI, db: Database, export_dir: Path, attempts: int
) -> None:
    auth = await make_tenant(db)
    contact = await add_contact(client, auth, {"emails": ["again@example.com"]})
    export_id = await queue(client, auth)
    await abandon(db, export_id, attempts)
    status = await poll(client, auth, export_id)
    assert status == {
        "export_id": export_id,
        "status": "processing",
        "created_at": status["created_at"],
        "message": "The export is being written.",
    }
    assert await state_of(app).exports.run_once() is True
    status = await poll(client, auth, export_id)
    assert status["status"] == "completed"
    assert await download(client, status["download_url"]) == [line(contact)]
    assert files(export_dir) == [f"{export_id}-{attempts + 1}.ndjson.gz"]


async def test_an_export_held_by_a_live_worker_is_left_alone(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    auth = await make_tenant(db)
    export_id = await queue(client, auth)
    async with db.writer() as session, session.begin():
        await session.execute(
            update(Export)
            .where(Export.id == export_id)
            .values(status="processing", lease_until=utcnow() + timedelta(seconds=30), attempts=1)
        )
    assert await state_of(app).exports.run_once() is False
    assert (await poll(client, auth, export_id))["status"] == "processing"


async def test_an_export_that_failed_max_attempts_times_ends_failed(
    client: httpx.AsyncClient, app: FastAPI, db: Database, export_dir: Path
) -> None:
    auth = await make_tenant(db)
    await add_contact(client, auth, {"emails": ["never@example.com"]})
    export_id = await queue(client, auth)
    await abandon(db, export_id, MAX_ATTEMPTS)
    assert await state_of(app).exports.run_once() is True
    status = await poll(client, auth, export_id)
    assert status == {
        "export_id": export_id,
        "status": "failed",
        "created_at": status["created_at"],
        "message": "The export failed repeatedly; please ask again.",
    }
    assert await state_of(app).exports.run_once() is False
    assert (await poll(client, auth, export_id))["status"] == "failed"
    assert files(export_dir) == []


async def test_an_export_that_cannot_be_written_fails_with_a_message(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    occupied = tmp_path / "not-a-directory"
    occupied.write_text("in the way")
    application = build(settings, occupied)
    try:
        async with http(application) as client:
            auth = await make_tenant(db)
            export_id = await queue(client, auth)
            assert await state_of(application).exports.run_once() is True
            status = await poll(client, auth, export_id)
    finally:
        await close(application)
    assert status == {
        "export_id": export_id,
        "status": "failed",
        "created_at": status["created_at"],
        "message": "The export could not be written; ask again.",
    }


async def test_the_lifespan_runs_the_worker(
    settings: Settings, db: Database, export_dir: Path
) -> None:
    application = build(settings, export_dir, export_poll_seconds=0.05)
    try:
        async with application.router.lifespan_context(application), http(application) as client:
            auth = await make_tenant(db)
            contact = await add_contact(client, auth, {"emails": ["loop@example.com"]})
            export_id = await queue(client, auth)
            status = await until_completed(client, auth, export_id)
            assert status["status"] == "completed"
            assert await download(client, status["download_url"]) == [line(contact)]
    finally:
        await close(application)


def test_old_files_are_removed_and_fresh_ones_kept(db: Database, tmp_path: Path) -> None:
    now = time.time()
    ages = {
        "old.ndjson.gz": 17 * 60,
        "old.part": 17 * 60,
        "ancient.ndjson.gz": 24 * 3600,
        "recent.ndjson.gz": 15 * 60,
        "recent.part": 15 * 60,
        "fresh.ndjson.gz": 0,
        "notes.txt": 17 * 60,  # not an export file: never touched
    }
    for name, age in ages.items():
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (now - age, now - age))
    worker = ExportWorker(db, tmp_path)
    worker.remove_old_files()
    assert files(tmp_path) == [
        "fresh.ndjson.gz",
        "notes.txt",
        "recent.ndjson.gz",
        "recent.part",
    ]
    ExportWorker(db, tmp_path / "missing").remove_old_files()  # no directory yet: nothing to do


async def test_a_signed_link_to_an_unfinished_or_unknown_export_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    key = await the_signing_key(db)
    expires = int(time.time()) + 600
    for export_id in (await queue(client, auth), "no-such-export"):
        query: dict[str, str | int] = {
            "expires": expires,
            "signature": sign_download(key, export_id, expires),
        }
        response = await client.get(f"{EXPORTS}/{export_id}/download", params=query)
        assert (response.status_code, answered(response)) == (403, REFUSED)


async def test_tampered_expired_and_foreign_links_are_refused(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    auth, other = await make_tenant(db, "Acme"), await make_tenant(db, "Other")
    await add_contact(client, auth, {"emails": ["mine@example.com"]})
    export_id = await queue(client, auth)
    other_id = await queue(client, other)
    assert await state_of(app).exports.run_once() is True
    assert await state_of(app).exports.run_once() is True
    url = (await poll(client, auth, export_id))["download_url"]
    path = urlsplit(url).path
    params = dict(parse_qsl(urlsplit(url).query))
    expires, signature = int(params["expires"]), params["signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    key = await the_signing_key(db)
    past = int(time.time()) - 1
    links: list[tuple[str, dict[str, str | int]]] = [
        (path, {"expires": expires, "signature": flipped}),
        (path, {"expires": expires + 1, "signature": signature}),
        (path, {"expires": past, "signature": sign_download(key, export_id, past)}),
        (path.replace(export_id, other_id), {"expires": expires, "signature": signature}),
        (path, {"expires": expires, "signature": "é" * 64}),
        (path, {"expires": expires, "signature": ""}),
    ]
    for link_path, query in links:
        response = await client.get(link_path, params=query)
        assert response.status_code == 403, query
        assert response.headers["content-type"] == "application/json"
        assert answered(response) == REFUSED
    assert len(await download(client, url)) == 1


async def test_a_download_link_without_its_parameters_is_422(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    link = f"{EXPORTS}/{await queue(client, auth)}/download"
    expires = "The expires field is required."
    signature = "The signature field is required."
    cases: list[tuple[dict[str, str], dict[str, str]]] = [
        ({}, {"expires": expires, "signature": signature}),
        ({"signature": "ab"}, {"expires": expires}),
        ({"expires": "1"}, {"signature": signature}),
        (
            {"expires": "soon", "signature": "ab"},
            {"expires": 'The expires field must be an integer ("soon").'},
        ),
    ]
    for query, errors in cases:
        response = await client.get(link, params=query)
        assert response.status_code == 422, query
        assert answered(response) == invalid(errors)


async def insert_contacts(db: Database, space_id: int, count: int) -> list[int]:
    """`count` contacts written straight into the tables, their ids in order."""
    now = utcnow()
    async with db.writer() as session, session.begin():
        await session.execute(
            insert(Contact),
            [
                {"space_id": space_id, "email": f"bulk{n}@example.com"}
                | {"created_at": now, "updated_at": now}
                for n in range(count)
            ],
        )
        rows = (
            await session.execute(
                select(Contact.id, Contact.email)
                .where(Contact.space_id == space_id)
                .order_by(Contact.id)
            )
        ).all()
        await session.execute(
            insert(ContactEmail),
            [
                {"space_id": space_id, "contact_id": row.id, "position": 0}
                | {"value": row.email, "normalised": row.email}
                for row in rows
            ],
        )
    return [row.id for row in rows]


async def test_a_large_export_has_every_contact_once_in_id_order(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    ids = await insert_contacts(db, space_id, 5_000)
    assert len(ids) == 5_000
    lines = await export(client, app, auth, ALL_TIME)
    assert len(lines) == 5_000
    exported = [item["id"] for item in lines]
    assert exported == sorted(set(exported))
    assert exported == ids
    assert lines[0]["email"] == "bulk0@example.com"
    assert lines[-1]["email"] == "bulk4999@example.com"


async def test_a_person_erased_while_the_export_runs_is_not_in_its_file(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    """The erasure commits after the export has read the person (the test erases them as the
    worker's first read returns): the worker writes the file again, without them (SPEC 6.4)."""
    auth = await make_tenant(db)
    people = [await add_contact(client, auth, {"emails": [f"p{n}@example.com"]}) for n in range(5)]
    export_id = await queue(client, auth)
    worker = state_of(app).exports
    read = worker._batch
    reads = 0

    async def read_then_erase(claim: Any, chosen: Any, after: int) -> list[Any]:
        nonlocal reads
        rows = await read(claim, chosen, after)
        reads += 1
        if reads == 1:
            assert people[2]["id"] in [row.id for row in rows]
            erased = await client.delete(f"{CONTACTS}/{people[2]['id']}", headers=auth)
            assert erased.status_code == 204
        return rows

    worker._batch = read_then_erase  # type: ignore[method-assign]
    assert await worker.run_once() is True
    status = await poll(client, auth, export_id)
    assert status["status"] == "completed", status
    lines = await download(client, status["download_url"])
    assert sorted(row["id"] for row in lines) == sorted(
        person["id"] for n, person in enumerate(people) if n != 2
    )
    assert reads == 4  # a pass (a batch, then the end), and the pass again

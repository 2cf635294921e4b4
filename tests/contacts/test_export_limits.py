"""Exports cannot be used by one tenant against the others (SPEC 6.8, issue 16): 3 at once per
Space, Spaces served in turn, inactive Spaces wait and cannot download, a budget for the
folder, and files only the service's user can read."""

import gzip
import os
import stat
from pathlib import Path

import httpx
from fastapi import FastAPI

from contactbase.contacts.export_worker import ExportWorker
from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.spaces import service
from contactbase.state import state_of
from tests.contacts.test_exports import ALL_TIME, EXPORTS, poll, queue
from tests.factories import CONTACTS, bearer, make_key, make_space


def old_file(folder: Path, name: str, size: int, at: float | None = None) -> Path:
    """A file already in the exports folder, of `size` bytes, written at `at` (default: now)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"x" * size)
    if at is not None:
        os.utime(path, (at, at))
    return path


def modes(folder: Path) -> list[int]:
    """The folder's mode, then its one file's (a gzip of one line)."""
    (written,) = folder.iterdir()
    assert gzip.decompress(written.read_bytes()).count(b"\n") == 1
    return [stat.S_IMODE(folder.stat().st_mode), stat.S_IMODE(written.stat().st_mode)]


async def tenant(db: Database, name: str = "Acme") -> tuple[int, dict[str, str]]:
    space_id = await make_space(db, name)
    return space_id, bearer(await make_key(db, space_id))


async def test_a_space_has_at_most_3_exports_queued_or_running(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    _space, auth = await tenant(db)
    _other, other_auth = await tenant(db, "Other")
    for _ in range(3):
        await queue(client, auth)
    refused = await client.post(EXPORTS, json=ALL_TIME, headers=auth)
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_exports"
    assert refused.headers["retry-after"] == "10"
    assert (await client.post(EXPORTS, json=ALL_TIME, headers=other_auth)).status_code == 202
    worker = state_of(app).exports
    while await worker.run_once():
        pass
    assert (await client.post(EXPORTS, json=ALL_TIME, headers=auth)).status_code == 202


async def test_spaces_take_turns(client: httpx.AsyncClient, app: FastAPI, db: Database) -> None:
    _a, auth_a = await tenant(db, "A")
    _b, auth_b = await tenant(db, "B")
    first_a = [await queue(client, auth_a) for _ in range(3)]
    only_b = await queue(client, auth_b)
    worker = state_of(app).exports
    order = []
    for _ in range(4):
        assert await worker.run_once()
        done = {
            export_id: (await poll(client, auth, export_id))["status"]
            for export_id, auth in [*[(e, auth_a) for e in first_a], (only_b, auth_b)]
        }
        order += [e for e, status in done.items() if status == "completed" and e not in order]
    assert order == [first_a[0], only_b, first_a[1], first_a[2]]


async def test_an_inactive_space_waits_and_cannot_download(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    space_id, auth = await tenant(db)
    await client.post(CONTACTS, json={"emails": ["ada@example.com"]}, headers=auth)
    done = await queue(client, auth)
    worker = state_of(app).exports
    assert await worker.run_once()
    link = (await poll(client, auth, done))["download_url"]
    waiting = await queue(client, auth)
    async with db.writer() as session, session.begin():
        await service.set_status(session, space_id, "inactive")
    assert await worker.run_once() is False  # its export waits
    refused = await client.get(link)
    assert refused.status_code == 403
    assert refused.json()["code"] == "space_inactive"
    async with db.writer() as session, session.begin():
        await service.set_status(session, space_id, "active")
    assert (await client.get(link)).status_code == 200
    assert await worker.run_once()
    assert (await poll(client, auth, waiting))["status"] == "completed"


async def test_a_link_outlives_the_key_that_asked_for_it(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    """A link is its own credential for 15 minutes (the docs say so)."""
    space_id = await make_space(db)
    async with db.writer() as session, session.begin():
        key, raw = await service.create_key(session, space_id)
    auth = bearer(raw)
    export_id = await queue(client, auth)
    assert await state_of(app).exports.run_once()
    link = (await poll(client, auth, export_id))["download_url"]
    async with db.writer() as session, session.begin():
        await service.revoke_key(session, key.id)
    assert (await client.get(link)).status_code == 200


async def test_files_and_folder_are_private(
    client: httpx.AsyncClient, app: FastAPI, db: Database, settings: Settings
) -> None:
    _space, auth = await tenant(db)
    await client.post(CONTACTS, json={"emails": ["ada@example.com"]}, headers=auth)
    await queue(client, auth)
    assert await state_of(app).exports.run_once()
    assert modes(settings.export_dir) == [0o700, 0o600]


async def test_an_export_that_would_pass_the_folder_budget_fails_clearly(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    _space, auth = await tenant(db)
    items = [{"emails": [f"p{n}@example.com"], "names": [f"Person {n}"]} for n in range(500)]
    await client.post(f"{CONTACTS}/batch", json={"contacts": items}, headers=auth)
    folder = settings.export_dir
    old_file(folder, "old.ndjson.gz", 2000)
    worker = ExportWorker(db, folder, max_bytes=3000)
    export_id = await queue(client, auth)
    assert await worker.run_once()
    status = await poll(client, auth, export_id)
    assert status["status"] == "failed"
    assert "CONTACTBASE_EXPORT_MAX_BYTES" in status["message"]
    assert os.listdir(folder) == ["old.ndjson.gz"]  # nothing left of the failed export


async def test_expired_files_go_first(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    _space, auth = await tenant(db)
    await client.post(CONTACTS, json={"emails": ["ada@example.com"]}, headers=auth)
    folder = settings.export_dir
    old = old_file(folder, "old-1.ndjson.gz", 5000, at=1_000_000_000)  # expired in 2001
    worker = ExportWorker(db, folder, max_bytes=3000)
    export_id = await queue(client, auth)
    assert await worker.run_once()
    assert (await poll(client, auth, export_id))["status"] == "completed"
    assert not old.exists()

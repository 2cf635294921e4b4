"""Security through the real HTTP app: one Space never reads, changes or learns of another's
data on any endpoint; keys are kept as SHA-256 hashes and never reach a log."""

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import text
from typer.testing import CliRunner

from contactbase.app import close, create_app
from contactbase.cli import app as cli_app
from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.state import state_of
from tests.factories import (
    CONTACTS,
    SEED,
    add_contact,
    answered,
    authorised,
    bearer,
    make_key,
    make_space,
    make_tenant,
)

Auth = dict[str, str]
EXPORTS = f"{CONTACTS}/exports"
ALL_TIME = {"start_date": "2000-01-01 00:00:00", "end_date": "2099-12-31 23:59:59"}
UNAUTHENTICATED = {"message": "Unauthenticated."}
URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nope"
LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "contactbase", "sqlalchemy", "aiosqlite")


async def fetch(client: httpx.AsyncClient, auth: Auth, contact_id: int) -> dict[str, Any]:
    response = await client.get(f"{CONTACTS}/{contact_id}", headers=auth)
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


async def listed(
    client: httpx.AsyncClient, auth: Auth, params: dict[str, str] | None = None
) -> dict[str, Any]:
    response = await client.get(CONTACTS, params=params, headers=auth)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def seen(response: httpx.Response) -> tuple[int, Any, list[str], dict[str, str]]:
    """What a caller can observe of an answer: status, body, header names, and the values of
    the headers that do not change from one request to the next."""
    varying = {"x-request-id", "x-ratelimit-remaining", "ratelimit"}
    stable = {name: value for name, value in response.headers.items() if name not in varying}
    return response.status_code, answered(response), sorted(response.headers), stable


async def test_a_foreign_contact_id_answers_exactly_as_an_unused_one(
    client: httpx.AsyncClient, db: Database
) -> None:
    """GET and PUT of Space B's id, asked by A, before and after B's contact exists."""
    space_a, space_b = await make_tenant(db, "A"), await make_tenant(db, "B")
    mine = await add_contact(client, space_a, {"emails": ["a@example.com"]})
    unused = mine["id"] + 1
    change = {"names": ["Mallory"], "emails": ["mallory@example.com"]}

    async def probe() -> list[tuple[int, Any, list[str], dict[str, str]]]:
        return [
            seen(await client.get(f"{CONTACTS}/{unused}", headers=space_a)),
            seen(await client.put(f"{CONTACTS}/{unused}", json=change, headers=space_a)),
            seen(await client.get(f"{CONTACTS}/{unused}?include_events=1", headers=space_a)),
        ]

    before = await probe()
    theirs = await add_contact(client, space_b, SEED)
    assert theirs["id"] == unused
    after = await probe()
    assert after == before
    assert [status for status, *_ in after] == [404, 404, 404]
    assert [body for _, body, *_ in after] == [{"message": f"No contact with id {unused}."}] * 3
    assert await fetch(client, space_b, unused) == theirs
    assert await fetch(client, space_a, mine["id"]) == mine
    by_email = await listed(client, space_b, {"email": "mallory@example.com"})
    assert by_email["data"] == []


async def test_a_foreign_email_makes_a_separate_contact(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Neither a 409 (naming B's id) nor a merge into B's contact; B's contact is untouched."""
    space_a, space_b = await make_tenant(db, "A"), await make_tenant(db, "B")
    theirs = await add_contact(client, space_b, SEED)
    refused = await client.post(
        f"{CONTACTS}?on_conflict=error",
        json={"emails": ["JOHN@example.com"], "names": ["Imposter"]},
        headers=space_a,
    )
    assert refused.status_code == 201
    mine = refused.json()
    assert mine["id"] != theirs["id"]
    assert (mine["emails"], mine["names"], mine["phones"]) == (
        ["JOHN@example.com"],
        ["Imposter"],
        [],
    )
    merged = await client.post(
        CONTACTS, json={"emails": ["johnny@example.com", "john@example.com"]}, headers=space_a
    )
    assert merged.status_code == 200
    assert merged.json()["id"] == mine["id"]
    assert merged.json()["emails"] == ["JOHN@example.com", "johnny@example.com"]
    other = await add_contact(client, space_a, {"emails": ["other@example.com"]})
    moved = await client.put(
        f"{CONTACTS}/{other['id']}", json={"emails": ["Johnny@example.com"]}, headers=space_a
    )
    assert moved.status_code == 422  # A's own contact holds it now, not B's
    assert moved.json()["existing_contact_id"] == mine["id"]
    assert await fetch(client, space_b, theirs["id"]) == theirs
    assert [item["id"] for item in (await listed(client, space_b))["data"]] == [theirs["id"]]
    assert [item["id"] for item in (await listed(client, space_a))["data"]] == [
        other["id"],
        mine["id"],
    ]


async def test_lists_and_look_ups_show_only_the_own_space(
    client: httpx.AsyncClient, db: Database
) -> None:
    space_a, space_b = await make_tenant(db, "A"), await make_tenant(db, "B")
    mine, theirs = [], []
    for n in range(3):
        mine.append(await add_contact(client, space_a, {"emails": [f"a{n}@example.com"]}))
        theirs.append(
            await add_contact(
                client,
                space_b,
                {"emails": [f"b{n}@example.com", f"a{n}@example.com"], "phones": ["+1 555 0100"]},
            )
        )
    mine_ids = [contact["id"] for contact in reversed(mine)]
    full = await listed(client, space_a, {"include_all_emails": "1"})
    assert [item["id"] for item in full["data"]] == mine_ids
    assert [item["emails"] for item in full["data"]] == [[f"a{n}@example.com"] for n in (2, 1, 0)]
    unused = await listed(client, space_a, {"email": "nobody@example.com"})
    for email in ("b0@example.com", "B1@EXAMPLE.COM"):
        assert await listed(client, space_a, {"email": email}) == unused
    assert (await listed(client, space_a, {"phone": "15550100"}))["data"] == []
    found = await listed(client, space_a, {"email": "a1@example.com"})
    assert [item["id"] for item in found["data"]] == [mine[1]["id"]]
    in_b = await listed(client, space_b, {"phone": "15550100"})
    assert [item["id"] for item in in_b["data"]] == [contact["id"] for contact in reversed(theirs)]
    # Walk A's list one contact per page, forward then back: B's contacts never show.
    walked: list[int] = []
    page = await listed(client, space_a, {"per_page": "1"})
    while True:
        walked += [item["id"] for item in page["data"]]
        if page["next_cursor"] is None:
            break
        page = await listed(client, space_a, {"per_page": "1", "cursor": page["next_cursor"]})
    assert walked == mine_ids
    back = await listed(client, space_a, {"per_page": "1", "cursor": page["prev_cursor"]})
    assert [item["id"] for item in back["data"]] == [mine_ids[1]]


async def test_a_foreign_cursor_is_refused_like_a_forged_one(
    client: httpx.AsyncClient, db: Database
) -> None:
    space_a, space_b = await make_tenant(db, "A"), await make_tenant(db, "B")
    for n in range(2):
        await add_contact(client, space_a, {"emails": [f"a{n}@example.com"]})
        await add_contact(client, space_b, {"emails": [f"b{n}@example.com"]})
    token = (await listed(client, space_b, {"per_page": "1"}))["next_cursor"]
    assert isinstance(token, str)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    for cursor in (token, forged):
        response = await client.get(CONTACTS, params={"cursor": cursor}, headers=space_a)
        assert response.status_code == 422
        message = f"The cursor field is not a valid cursor ({json.dumps(cursor)})."
        assert answered(response) == {"message": message, "errors": {"cursor": [message]}}
    # The same cursor still works for the Space that issued it.
    assert len((await listed(client, space_b, {"cursor": token}))["data"]) == 1


async def test_exports_are_confined_to_their_space(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    space_a, space_b = await make_tenant(db, "A"), await make_tenant(db, "B")
    mine = [await add_contact(client, space_a, {"emails": ["shared@example.com"], "names": ["A"]})]
    await add_contact(client, space_b, {"emails": ["shared@example.com"], "names": ["B"]})
    mine.append(await add_contact(client, space_a, {"emails": ["a@example.com"]}))
    await add_contact(client, space_b, {"emails": ["b@example.com"]})
    queued = {}
    for name, auth in (("a", space_a), ("b", space_b)):
        response = await client.post(EXPORTS, json=ALL_TIME, headers=auth)
        assert response.status_code == 202
        queued[name] = response.json()["export_id"]
    assert await state_of(app).exports.run_once() is True
    assert await state_of(app).exports.run_once() is True
    foreign = await client.get(f"{EXPORTS}/{queued['b']}", headers=space_a)
    assert foreign.status_code == 404
    assert answered(foreign) == {"message": f"No export with id {queued['b']}."}
    status = (await client.get(f"{EXPORTS}/{queued['a']}", headers=space_a)).json()
    assert status["status"] == "completed"
    url = urlsplit(status["download_url"])
    download = await client.get(f"{url.path}?{url.query}")
    assert download.status_code == 200
    lines = [json.loads(line) for line in gzip.decompress(download.content).splitlines()]
    assert [(row["id"], row["email"], row["name"]) for row in lines] == [
        (mine[0]["id"], "shared@example.com", "A"),
        (mine[1]["id"], "a@example.com", None),
    ]
    # A's link, pointed at B's export, is refused like any forged link.
    stolen = await client.get(
        url.path.replace(queued["a"], queued["b"]), params=parse_qsl(url.query)
    )
    assert stolen.status_code == 403
    assert answered(stolen) == {"message": "This download link is invalid or has expired."}


async def test_only_the_sha256_hex_of_a_key_is_stored(db: Database) -> None:
    key = await make_key(db, await make_space(db))
    async with db.reader() as session:
        rows = (await session.execute(text("SELECT key_hash, prefix FROM api_keys"))).all()
    assert rows == [(hashlib.sha256(key.encode()).hexdigest(), key[:11])]
    assert re.fullmatch(r"[0-9a-f]{64}", rows[0][0])


async def test_a_key_differing_in_one_character_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    key = await make_key(db, await make_space(db))
    variants = {key[:-1], key + "A", "CB_" + key[3:], "cb-" + key[3:], key.swapcase()}
    for position in range(len(key)):
        replacement = URL_SAFE[(URL_SAFE.find(key[position]) + 1) % len(URL_SAFE)]
        variants.add(key[:position] + replacement + key[position + 1 :])
    variants.discard(key)
    assert len(variants) == len(key) + 5
    for variant in sorted(variants):
        response = await client.get(CONTACTS, headers=bearer(variant))
        assert (response.status_code, answered(response)) == (401, UNAUTHENTICATED), variant
    assert (await client.get(CONTACTS, headers=bearer(key))).status_code == 200


def leaks(secrets: list[str], text: str) -> list[str]:
    return [secret for secret in secrets if secret in text]


def secrets_of(key: str) -> list[str]:
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    return [key, key[3:], wrong, wrong[3:]]


async def test_keys_never_reach_the_logs(
    caplog: pytest.LogCaptureFixture,
    database_url: str,
    settings: Settings,
    db: Database,
    tmp_path: Path,
) -> None:
    """Everything logged, at DEBUG, while a key is created, used, refused, and met by a 500."""
    caplog.set_level(logging.DEBUG)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    space_id = await make_space(db)
    env: dict[str, str | None] = {
        "CONTACTBASE_DATABASE_URL": database_url,
        "CONTACTBASE_REDIS_URL": None,
    }
    command = ["key", "create", str(space_id), "--json"]
    created = await asyncio.to_thread(CliRunner().invoke, cli_app, command, env=env)
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)["key"]
    app = create_app(settings.model_copy(update={"export_dir": tmp_path}))

    @app.get("/boom")
    async def boom(request: Request) -> None:
        caller = await authorised(request)
        raise RuntimeError(f"failed for Space {caller.space_id}")

    auth, wrong = bearer(key), bearer(secrets_of(key)[2])
    calls: list[tuple[str, str, dict[str, Any], Auth]] = [
        ("POST", CONTACTS, {"json": SEED}, auth),
        ("GET", f"{CONTACTS}/1", {}, auth),
        ("PUT", f"{CONTACTS}/1", {"json": {"names": ["X"]}}, auth),
        ("GET", CONTACTS, {"params": {"email": "john@example.com"}}, auth),
        ("POST", EXPORTS, {"json": ALL_TIME}, auth),
        ("POST", CONTACTS, {"json": {"emails": ["bad"]}}, auth),
        ("GET", CONTACTS, {}, wrong),
        ("GET", "/boom", {}, auth),
    ]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        statuses = [
            (await http.request(method, path, headers=headers, **extra)).status_code
            for method, path, extra, headers in calls
        ]
    await close(app)
    assert statuses == [201, 200, 200, 200, 202, 422, 401, 500]
    offline = create_app(Settings(database_url=UNREACHABLE, redis_url=None))
    transport = httpx.ASGITransport(app=offline, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        assert (await http.get(CONTACTS, headers=auth)).status_code == 503
    await close(offline)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = caplog.text + "\n".join(formatter.format(record) for record in caplog.records)
    # The capture saw the SQL (its parameters are hidden: hide_parameters), the 500 and the 503.
    assert "api_keys" in logged
    assert "unexpected failure" in logged
    assert "failed for Space" in logged
    assert "database unavailable" in logged
    assert leaks(secrets_of(key), logged) == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(65_536)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_a_running_server_never_logs_keys(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    """`contactbase serve` with its access log: requests with the key, a wrong key, raw bytes."""
    key = await make_key(db, await make_space(db))
    port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("CONTACTBASE")},
        "CONTACTBASE_DATABASE_URL": database_url,
        "CONTACTBASE_EXPORT_DIR": str(tmp_path / "exports"),
        "PYTHONUNBUFFERED": "1",
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "contactbase", "serve", "--port", str(port)),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(400):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            auth = bearer(key)
            created = await http.post(CONTACTS, json=SEED, headers=auth)
            assert created.status_code == 201
            assert (await http.get(f"{CONTACTS}/1", headers=auth)).status_code == 200
            assert (await http.get(CONTACTS, headers=auth)).status_code == 200
            refused = await http.get(CONTACTS, headers=bearer(secrets_of(key)[2]))
            assert refused.status_code == 401
            odd = [(b"authorization", b"Bearer cb_" + b"\xe9" * 43), (b"x-request-id", b"\xff")]
            oddly = await http.get(CONTACTS, headers=odd)
            assert (oddly.status_code, answered(oddly)) == (401, UNAUTHENTICATED)
            assert re.fullmatch(r"[0-9a-f]{32}", oddly.headers["x-request-id"])
        control = (
            f"GET {CONTACTS} HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\x01b\r\n"
            f"Authorization: Bearer {key}\x00\r\nConnection: close\r\n\r\n"
        ).encode()
        status_line = (await raw_request(port, control)).split(b"\r\n", 1)[0]
        assert status_line == b"HTTP/1.1 400 Bad Request"
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(server.communicate(), timeout=30)
    output = (stdout + stderr).decode("utf-8", "replace")
    assert f'"GET {CONTACTS} HTTP/1.1" 200' in output
    assert f'"GET {CONTACTS} HTTP/1.1" 401' in output
    assert f'"POST {CONTACTS} HTTP/1.1" 201' in output
    assert leaks(secrets_of(key), output) == []

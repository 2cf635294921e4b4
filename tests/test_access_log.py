"""The access log: one line per request on standard output, written whole by the app
(uvicorn's own is off), with the time taken and the request id; off with access_log=false
(as `serve --json` sets it)."""

import re

import pytest

from contactbase.app import create_app
from contactbase.db import Database
from contactbase.middleware import access_line
from contactbase.settings import Settings
from tests.factories import CONTACTS, SEED, make_tenant
from tests.test_operations import serve

LINE = re.compile(
    r'INFO:     127\.0\.0\.1:123 - "(?P<request>[^"]*) HTTP/1\.1" (?P<status>\d{3}) '
    r"(?P<ms>\d+\.\d)ms (?P<id>\S+)"
)


async def test_every_request_gets_one_line(
    settings: Settings, db: Database, capfd: pytest.CaptureFixture[str]
) -> None:
    auth = await make_tenant(db)
    async for http in serve(create_app(settings.model_copy(update={"access_log": True}))):
        capfd.readouterr()
        created = await http.post(CONTACTS, json=SEED, headers=auth)
        missing = await http.get(f"{CONTACTS}/999999?x=1", headers={"X-Request-Id": "mine"})
        health = await http.get("/healthz")
    lines = capfd.readouterr().out.splitlines()
    found = [LINE.fullmatch(line) for line in lines]
    assert all(found), lines
    assert [(m["request"], m["status"], m["id"]) for m in found if m] == [
        (f"POST {CONTACTS}", "201", created.headers["x-request-id"]),
        (f"GET {CONTACTS}/999999?x=1", str(missing.status_code), "mine"),
        ("GET /healthz", "200", health.headers["x-request-id"]),
    ]


async def test_off_when_asked(settings: Settings, capfd: pytest.CaptureFixture[str]) -> None:
    async for http in serve(create_app(settings.model_copy(update={"access_log": False}))):
        capfd.readouterr()
        assert (await http.get("/healthz")).status_code == 200
    assert capfd.readouterr().out == ""


def test_a_request_cannot_write_a_line_of_its_own() -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x\nINFO: forged",  # %0A as the server decodes it
        "query_string": b"",
        "client": ("10.0.0.1", 5),
        "http_version": "1.1",
    }
    line = access_line(scope, 404, 0.0012, "abc")
    assert line == b'INFO:     10.0.0.1:5 - "GET /x%0AINFO%3A%20forged HTTP/1.1" 404 1.2ms abc\n'
    raw = access_line({**scope, "raw_path": b"/x%0Ay"}, 404, 0.0, "abc")
    assert raw.count(b"\n") == 1

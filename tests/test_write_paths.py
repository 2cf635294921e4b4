"""The write path stores the same rows on PostgreSQL as on SQLite: one sequence of requests
(creates, merges into one contact and of several, custom-field slots set, filled and
overwritten, on_conflict=error, updates, refusals, a repeat that changes nothing) is sent to an
app on each, and the two must answer alike and leave the same rows in every contact table.

The two dialects take different paths (on PostgreSQL a new contact is one statement of
data-modifying CTEs outside any transaction, on SQLite a transaction on the single writer), so
agreement on one is no evidence for the other; this holds them to each other. It runs in the
PostgreSQL pass and makes its own SQLite database beside it."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import text

from contactbase.app import create_app
from contactbase.db import Database
from contactbase.migrations import migrations_config
from contactbase.settings import Settings
from tests.factories import CONTACTS, bearer, make_key, make_space

TABLES = ("contacts", "contact_emails", "contact_phones", "contact_names", "contact_locations")
# Written from each database's own clock: they differ between the two runs whatever is stored.
TIMESTAMPS = {"created_at", "updated_at"}


@dataclass(frozen=True)
class Step:
    """One request, sent alike to both apps. `{A}` in the path is the id that the contact
    recorded as A got on that app."""

    method: str
    path: str
    body: Any = None
    status: int = 200  # what it must answer, so that the sequence does what it says
    records: str | None = None  # the name under which to record the id it answers with


MERGE_INTO_A = Step(
    "POST",
    CONTACTS,
    {
        "emails": ["ADA@example.com", "countess@example.com"],
        "phones": ["+442079460958", "+44 20 7946 0000"],
        "names": ["Ada King", "Ada Lovelace"],
        "locations": ["Ockham"],
    },
)
STEPS = (
    Step(
        "POST",
        CONTACTS,
        {
            "emails": ["ada@example.com", "ada.l@example.com"],
            "phones": ["+44 20 7946 0958"],
            "names": ["Ada Lovelace"],
            "locations": ["London"],
        },
        201,
        "A",
    ),
    Step("POST", CONTACTS, {"emails": ["bob@example.com"], "names": ["Bob"]}, 201, "B"),
    Step(
        "POST",
        CONTACTS,
        {
            "emails": ["cy@example.com"],
            "phones": ["+1 555 0100"],
            "custom_fields": {
                "profile_field_1": "VIP",
                "profile_field_16": 3,
                "profile_field_17": 2.5,
                "profile_field_26": "2026-11-26",
                "profile_field_27": "2026-11-26T08:00:00Z",
            },
        },
        201,
        "C",
    ),
    # Into A: a known email in another case, a known phone in another spelling and a known
    # name are not repeated; the new values are appended. Then the same again, which is
    # known through and through: nothing changes.
    *[MERGE_INTO_A] * 2,
    # B's empty primaries and slots filled.
    Step(
        "POST",
        CONTACTS,
        {
            "emails": ["bob@example.com"],
            "phones": ["(555) 010-0200"],
            "locations": ["Leeds"],
            "custom_fields": {"profile_field_2": "filled", "profile_field_18": -7},
        },
    ),
    # C's slots overwritten, a new date slot set.
    Step(
        "POST",
        CONTACTS,
        {
            "emails": ["cy@example.com"],
            "custom_fields": {
                "profile_field_1": "VIP2",
                "profile_field_16": 4.25,
                "profile_field_28": "2027-01-01",
            },
        },
    ),
    Step(
        "POST",
        CONTACTS,
        {
            "emails": ["dee@example.com"],
            "names": ["Dee"],
            "custom_fields": {
                "profile_field_1": "D text",
                "profile_field_3": "D only",
                "profile_field_19": 1000,
                "profile_field_29": "2026-12-24T18:30:00Z",
            },
        },
        201,
        "D",
    ),
    # D, C and B in one request: merged into B, the oldest; C and D become its aliases. B's
    # slots win, its empty ones are filled from C's and D's, the sent one overwrites.
    Step(
        "POST",
        CONTACTS,
        {
            "emails": ["dee@example.com", "cy@example.com", "bob@example.com", "new@example.com"],
            "phones": ["+1 555 0100", "+1 555 0300"],
            "names": ["Robert"],
            "custom_fields": {"profile_field_4": "sent"},
        },
    ),
    Step("POST", f"{CONTACTS}?on_conflict=error", {"emails": ["countess@example.com"]}, 409),
    Step(
        "POST",
        f"{CONTACTS}?on_conflict=error",
        {"emails": ["eve@example.com"], "names": ["Eve"]},
        201,
        "E",
    ),
    Step(
        "PUT",
        f"{CONTACTS}/{{A}}",
        {
            "names": ["Ada King"],
            "phones": [],
            "custom_fields": {"profile_field_1": "VIP", "profile_field_20": 0},
        },
    ),
    # Through the alias C: B's emails replaced (C's and D's are freed), its locations too.
    Step(
        "PUT",
        f"{CONTACTS}/{{C}}",
        {"emails": ["bob@example.com", "robert@example.com"], "locations": ["Paris", "Lyon"]},
    ),
    Step("PUT", f"{CONTACTS}/{{E}}", {"emails": ["ada@example.com"]}, 422),
    Step("POST", CONTACTS, {"emails": ["fine@example.com", "not-an-email"]}, 422),
    Step("POST", CONTACTS, {"emails": ["cy@example.com"], "names": ["Cy"]}, 201, "F"),
    *(Step("GET", f"{CONTACTS}/{{{name}}}") for name in "ABCDEF"),
    Step("GET", f"{CONTACTS}?per_page=100&include_all_emails=1&include_custom_fields=1"),
)


@dataclass
class Side:
    """One app and what the sequence has seen of it."""

    name: str
    client: httpx.AsyncClient
    db: Database
    auth: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    answers: list[tuple[str, int, Any]] = field(default_factory=list)


@pytest.fixture
def sqlite_url(is_postgres: bool, tmp_path: Path) -> str:
    """A fresh SQLite database beside the session's PostgreSQL one, migrated the same way."""
    if not is_postgres:
        pytest.skip("runs in the PostgreSQL pass (make test-postgres)")
    url = f"sqlite:///{tmp_path / 'beside-postgres.db'}"
    command.upgrade(migrations_config(url), "head")
    return url


@pytest.fixture
async def sides(
    client: httpx.AsyncClient, db: Database, settings: Settings, sqlite_url: str, tmp_path: Path
) -> AsyncIterator[list[Side]]:
    """The PostgreSQL app of the test's fixtures, and an app on the SQLite database with the
    same settings otherwise, each with a Space and a key of its own. Both databases start
    empty (the `db` fixture restarts PostgreSQL's sequences), so their ids agree."""
    lite_settings = settings.model_copy(
        update={"database_url": sqlite_url, "export_dir": tmp_path / "exports-sqlite"}
    )
    lite_app = create_app(lite_settings)
    lite_db = Database(sqlite_url, pool_size=1)
    transport = httpx.ASGITransport(app=lite_app, raise_app_exceptions=False)
    # The app's lifespan closes its pools and limiter when the test is done with it.
    async with (
        lite_app.router.lifespan_context(lite_app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as lite_client,
    ):
        pair = [Side("postgresql", client, db), Side("sqlite", lite_client, lite_db)]
        for side in pair:
            side.auth = bearer(await make_key(side.db, await make_space(side.db)))
        yield pair
    await lite_db.dispose()


def comparable(response: httpx.Response) -> tuple[int, Any]:
    """Status and body, less the timestamps."""
    body: Any = response.json() if response.content else None
    if isinstance(body, dict):
        body = without_timestamps(body)
    return response.status_code, body


def without_timestamps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timestamps(v) for k, v in value.items() if k not in TIMESTAMPS}
    if isinstance(value, list):
        return [without_timestamps(item) for item in value]
    return value


def normal(value: Any) -> Any:
    """A number as one type whichever driver read it (a double holding 3 reads as 3.0 on one
    and may read as 3 on the other)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


async def stored_rows(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of the contact tables, less timestamps, in an order both databases share."""
    tables = {}
    async with db.writer() as session:
        for table in TABLES:
            result = await session.execute(text(f"SELECT * FROM {table}"))
            rows = [
                {column: normal(value) for column, value in row.items() if column not in TIMESTAMPS}
                for row in result.mappings()
            ]
            tables[table] = sorted(rows, key=lambda row: json.dumps(row, sort_keys=True))
    return tables


async def test_both_dialects_answer_alike_and_store_the_same_rows(sides: list[Side]) -> None:
    """Each step to both apps in turn; then the answers, step by step, and the stored rows,
    table by table, must be equal (ids included: both databases number from 1)."""
    for number, step in enumerate(STEPS):
        for side in sides:
            path = step.path.format(**side.ids)
            # The same request id on both, so that error bodies, which quote it, compare whole.
            headers = {**side.auth, "X-Request-Id": f"step-{number}"}
            response = await side.client.request(
                step.method,
                path,
                headers=headers,
                **({} if step.body is None else {"json": step.body}),
            )
            assert response.status_code == step.status, (side.name, step, response.text)
            if step.records is not None:
                side.ids[step.records] = response.json()["id"]
            side.answers.append((f"{step.method} {path}", *comparable(response)))
    postgres, sqlite = sides
    assert postgres.ids == sqlite.ids
    for sent, answered in zip(postgres.answers, sqlite.answers, strict=True):
        assert sent == answered
    stored = [await stored_rows(side.db) for side in sides]
    for table in TABLES:
        assert stored[0][table] == stored[1][table], table
    # And the sequence did merge several: C and D are aliases of B, on both.
    ids = postgres.ids
    aliases = {row["id"]: row["merged_into_id"] for row in stored[0]["contacts"]}
    expected = dict.fromkeys(ids.values()) | {ids["C"]: ids["B"], ids["D"]: ids["B"]}
    assert aliases == expected

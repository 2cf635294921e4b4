"""Schemathesis against the app's own OpenAPI document, bounded for the suite (`make fuzz` runs
longer): every operation, with a key of Space A and then of Space B, must answer without a 5xx,
with a documented status code and content type, and a body that matches its documented schema."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contactbase.app import create_app
from contactbase.contacts import service
from contactbase.contacts.schemas import ContactCreate
from contactbase.db import Database
from contactbase.settings import Settings
from tests.factories import SEED, bearer, make_key, make_space

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Space A's key gets every phase: the documented examples, the coverage phase's edge cases
# (missing and wrong-typed values, unexpected methods) and random cases. Space B's key, another
# tenant over the same data, gets the examples (contact 17 is Space A's: a 404 for B) and fewer
# random cases. Several hundred requests in all, the same ones on every run (derandomized).
RUNS: dict[str, dict[str, Any]] = {
    "space_a": {"generation": {"max-examples": 25}},
    "space_b": {"generation": {"max-examples": 10}, "phases": {"coverage": {"enabled": False}}},
}
SEED_CONTACTS = 20  # the document's example id is 17: Space A owns it, Space B does not
CUSTOM_FIELDS = {
    "profile_field_1": "VIP",
    "profile_field_16": 3.5,
    "profile_field_26": "2026-11-26",
}

schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
async def space_keys(db: Database) -> dict[str, str]:
    """Two Spaces holding contacts, each with a read-write key; Space A's contacts come first."""
    keys = {}
    for run, name in (("space_a", "Space A"), ("space_b", "Space B")):
        space_id = await make_space(db, name)
        async with db.writer() as session, session.begin():
            for n in range(SEED_CONTACTS):
                custom_fields = {"custom_fields": CUSTOM_FIELDS} if n % 2 else {}
                payload = ContactCreate.model_validate(
                    {**SEED, "emails": [f"{run}.{n}@example.com"], **custom_fields}
                )
                await service.create_contact(session, space_id, payload)
        keys[run] = await make_key(db, space_id)
    return keys


@pytest.fixture(params=list(RUNS))
def api_schema(
    request: pytest.FixtureRequest, settings: Settings, space_keys: dict[str, str], tmp_path: Path
) -> Iterator[schemathesis.BaseSchema]:
    """The document served by a fresh app, generating cases with one Space's key."""
    # schemathesis 4.32's lazy schemas read `_nodeid`, which pytest 9.2 no longer has.
    request.node._nodeid = request.node.nodeid
    run: str = request.param
    config = schemathesis.Config.from_dict(
        {
            "seed": 20261126,
            "headers": bearer(space_keys[run]),
            **RUNS[run],
            "generation": {"deterministic": True, "database": "none", **RUNS[run]["generation"]},
        }
    )
    app = create_app(settings.model_copy(update={"export_dir": tmp_path / "exports"}))
    # Loading starts the app's lifespan in schemathesis' own event loop; it ends it at teardown.
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    shutdown_lifespans()


@schema.parametrize()
def test_every_answer_is_documented(
    case: schemathesis.Case[Any], space_keys: dict[str, str]
) -> None:
    response = case.call_and_validate(checks=CHECKS)
    # And no answer shows a contact of a Space other than the key's (seeded emails name theirs).
    sent = response.request.headers.get("Authorization")
    for run, key in space_keys.items():
        if sent != f"Bearer {key}":
            assert f"{run}." not in response.text


def test_every_documented_body_is_fuzzed(app: FastAPI) -> None:
    """A body schemathesis cannot build is silently left out of every case: refuse that."""
    document = schemathesis.openapi.from_dict(app.openapi())
    skipped = [
        operation.label
        for methods in document.values()
        for operation in methods.values()
        if "requestBody" in operation.definition.raw and not list(operation.body)
    ]
    assert skipped == [], f"schemathesis cannot build these documented bodies: {skipped}"

"""Schemathesis against the app's own OpenAPI document, bounded for the suite (`make fuzz` runs
longer): every operation, with a key of Space A and then of Space B, must pass every check this
schemathesis has: no 5xx; a documented status code, content type, headers and body; bad input
refused and good input accepted; a missing key refused; an undocumented method a 405 with `Allow`;
and the rest of its list (see `test_every_check_is_enabled`)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import CHECKS as REGISTERED_CHECKS
from schemathesis.checks import load_all_checks
from schemathesis.python.asgi import shutdown_lifespans

from contactbase.app import create_app
from contactbase.db import Database
from contactbase.settings import Settings
from tests.factories import CONTACTS, SEED, bearer, make_key, make_space

# Every check schemathesis has, its defaults or not: `enabled` at the top of the checks section
# turns each built-in on (schemathesis' `--checks all`), and `max_response_time`, the one check
# enabled only by giving it a limit, gets a generous one: an answer in process that takes this
# long is a hang, whatever the machine's load.
CHECKS_CONFIG: dict[str, Any] = {"enabled": True, "max_response_time": 10.0}
# `positive_data_acceptance` sends requests the document allows and expects them accepted. The
# document states every rule JSON Schema can; these operations also hold rules it cannot, and
# a request that breaks one of them is a 422 however it was generated: an email's validity as
# email-validator judges it (special-use domains, label lengths), a phone's count of digits
# among its separators, a date that exists (2026-02-30), end_date not before start_date, a
# cursor's signature, an email of another contact on an update, a link's signature. For them,
# and only them, a 422 is an expected answer too (and a create's 409, which on_conflict=error
# asks for when the emails are known); every other operation is held strictly. A batch answers
# an item that breaks such a rule, or meets known emails under on_conflict=error, within its 207;
# with atomic=true the whole batch is then a 422.
UNSTATED_RULES = (
    "updateContact",
    "listContacts",
    "downloadExport",
    "batchUpsertContacts",
)
# An export request breaks the same kind of rule (end_date before start_date), and a Space has
# at most 3 exports queued or running (SPEC 6.8): a fourth, however valid, is a 429.
EXPORT_RULES = ("422", "429")
ACCEPTANCE = ["2xx", "401", "403", "404"]
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


# A batch validates each item on its own (SPEC 6.3): a body whose items break the document is
# answered 207 with those items' 422s, not refused whole (tests/contacts/test_batch.py holds
# that a body of the wrong outer shape is).
ITEM_BY_ITEM = {
    "include-operation-id": ["batchUpsertContacts"],
    "checks": {"negative_data_rejection": {"expected-statuses": ["4xx", "207"]}},
}


def acceptance(operation_ids: list[str], *statuses: str) -> dict[str, Any]:
    """positive_data_acceptance for these operations: also these statuses."""
    expected = {"expected-statuses": [*ACCEPTANCE, *statuses]}
    return {"include-operation-id": operation_ids, "checks": {"positive_data_acceptance": expected}}


def fuzz_config(run: str, key: str) -> schemathesis.Config:
    """One run's configuration: its key, its phases, every check, the same cases each time."""
    return schemathesis.Config.from_dict(
        {
            "seed": 20261126,
            # The key as the document's security scheme names it (not a raw header), so that
            # the auth checks know it for the caller's own.
            "auth": {"openapi": {"ApiKey": {"bearer": key}}},
            "checks": CHECKS_CONFIG,
            **RUNS[run],
            "generation": {"deterministic": True, "database": "none", **RUNS[run]["generation"]},
            "operations": [
                acceptance(["createContact"], "409", "422"),
                acceptance(list(UNSTATED_RULES), "422"),
                acceptance(["createExport"], *EXPORT_RULES),
                ITEM_BY_ITEM,
            ],
        }
    )


@pytest.fixture
async def space_keys(db: Database, client: httpx.AsyncClient) -> dict[str, str]:
    """Two Spaces holding contacts, each with a read-write key; Space A's contacts come first.

    The contacts are made through the API, as a client makes them, so that this fixture holds
    whatever the write path underneath becomes."""
    keys = {}
    for run, name in (("space_a", "Space A"), ("space_b", "Space B")):
        space_id = await make_space(db, name)
        keys[run] = await make_key(db, space_id)
        for n in range(SEED_CONTACTS):
            custom_fields = {"custom_fields": CUSTOM_FIELDS} if n % 2 else {}
            body = {**SEED, "emails": [f"{run}.{n}@example.com"], **custom_fields}
            response = await client.post(CONTACTS, json=body, headers=bearer(keys[run]))
            assert response.status_code == 201, response.text
    # The ids the RUNS comment counts on: Space A holds 1 to 20, so the example's 17 is A's.
    first_of_b = await client.get(
        f"{CONTACTS}/{SEED_CONTACTS + 1}", headers=bearer(keys["space_b"])
    )
    assert first_of_b.json()["emails"] == ["space_b.0@example.com"], first_of_b.text
    return keys


@pytest.fixture(params=list(RUNS))
def api_schema(
    request: pytest.FixtureRequest, settings: Settings, space_keys: dict[str, str], tmp_path: Path
) -> Iterator[schemathesis.BaseSchema]:
    """The document served by a fresh app, generating cases with one Space's key."""
    # schemathesis 4.32's lazy schemas read `_nodeid`, which pytest 9.2 no longer has.
    request.node._nodeid = request.node.nodeid
    run: str = request.param
    app = create_app(settings.model_copy(update={"export_dir": tmp_path / "exports"}))
    # Loading starts the app's lifespan in schemathesis' own event loop; it ends it at teardown.
    yield schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=fuzz_config(run, space_keys[run])
    )
    shutdown_lifespans()


@schema.parametrize()
def test_every_answer_is_documented(
    case: schemathesis.Case[Any], space_keys: dict[str, str]
) -> None:
    # No `checks=`: schemathesis then runs every check its configuration enables, which is all.
    response = case.call_and_validate()
    # And no answer shows a contact of a Space other than the key's (seeded emails name theirs).
    sent = response.request.headers.get("Authorization")
    for run, key in space_keys.items():
        if sent != f"Bearer {key}":
            assert f"{run}." not in response.text


def test_every_check_is_enabled() -> None:
    """A check that a later schemathesis adds, or one that is off by default, is not silently
    left out: every check it registers is enabled for every run and phase of the fuzzing."""
    load_all_checks()  # the OpenAPI checks register themselves when their module is imported
    names = REGISTERED_CHECKS.get_all_names()
    assert "unsupported_method" in names
    for run in RUNS:
        config = fuzz_config(run, "cb_unused")
        for phase in ("examples", "coverage", "fuzzing", "stateful"):
            checks = config.projects.get_default().checks_config_for(phase=phase)
            disabled = [name for name in names if not checks.get_by_name(name=name).enabled]
            assert disabled == [], (run, phase)
            assert checks.max_response_time.enabled, (run, phase)


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

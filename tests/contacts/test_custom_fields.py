"""custom_fields: the 30 typed slots on create, get, update and list, their refusals, and how
they merge when contacts do."""

from typing import Any

import httpx
import pytest

from contactbase.db import Database
from tests.factories import CONTACTS, answered, make_tenant

Client = httpx.AsyncClient
Auth = dict[str, str]
Json = dict[str, Any]
SLOTS = [f"profile_field_{n}" for n in range(1, 31)]
DATE_RULE = "must be a date: YYYY-MM-DD or an ISO 8601 date-time"
# Sent -> as they come back.
SENT = {
    "profile_field_1": "line one\nline two\ttabbed\r\n",
    "profile_field_2": "Ünïcødé ✓ 名前",
    "profile_field_15": "x" * 10_240,
    "profile_field_16": 42,
    "profile_field_17": 3.5,
    "profile_field_18": -7.0,
    "profile_field_19": 0,
    "profile_field_20": 1e3,
    "profile_field_21": 12345678901,
    "profile_field_26": "2026-11-26",
    "profile_field_27": "2026-11-26T10:30:00+02:00",
    "profile_field_28": "2026-11-26T10:30:00Z",
    "profile_field_29": "2026-11-26T23:30:15-05:00",
    "profile_field_30": "2026-11-26T10:30:00",
}
SHOWN = {
    **SENT,
    "profile_field_18": -7,
    "profile_field_20": 1000,
    "profile_field_27": "2026-11-26T08:30:00Z",
    "profile_field_29": "2026-11-27T04:30:15Z",
    "profile_field_30": "2026-11-26T10:30:00Z",
}


@pytest.fixture
async def auth(db: Database) -> Auth:
    return await make_tenant(db)


async def post(client: Client, auth: Auth, body: Any) -> httpx.Response:
    return await client.post(CONTACTS, json=body, headers=auth)


async def create(client: Client, auth: Auth, email: str, slots: Json | None = None) -> Json:
    body: Json = {"emails": [email]}
    if slots is not None:
        body["custom_fields"] = slots
    response = await post(client, auth, body)
    assert response.status_code in (200, 201), response.text
    created: Json = response.json()
    return created


async def fetch(client: Client, auth: Auth, contact_id: int) -> Json:
    response = await client.get(f"{CONTACTS}/{contact_id}", headers=auth)
    assert response.status_code == 200, response.text
    contact: Json = response.json()
    return contact


async def listed_slots(client: Client, auth: Auth) -> dict[int, Json]:
    """Each listed contact's custom_fields, from the list with include_custom_fields=1."""
    response = await client.get(CONTACTS, params={"include_custom_fields": "1"}, headers=auth)
    assert response.status_code == 200, response.text
    return {item["id"]: item["custom_fields"] for item in response.json()["data"]}


def all_slots(**set_slots: Any) -> Json:
    """All 30 slots as the list shows them: nulls but for those given."""
    return {slot: set_slots.get(slot) for slot in SLOTS}


def one_error(field: str, message: str) -> Json:
    return {"message": message, "errors": {field: [message]}}


async def test_slots_round_trip_through_create_get_and_list(client: Client, auth: Auth) -> None:
    created = await post(client, auth, {"emails": ["a@example.com"], "custom_fields": SENT})
    assert created.status_code == 201
    assert created.json()["custom_fields"] == SHOWN
    assert (await fetch(client, auth, created.json()["id"]))["custom_fields"] == SHOWN
    assert await listed_slots(client, auth) == {created.json()["id"]: all_slots(**SHOWN)}


async def test_date_time_at_midnight_utc_stays_a_date_time(client: Client, auth: Auth) -> None:
    sent = {"profile_field_26": "2026-11-26T02:00:00+02:00", "profile_field_27": "2026-11-26"}
    shown = {"profile_field_26": "2026-11-26T00:00:00Z", "profile_field_27": "2026-11-26"}
    created = await create(client, auth, "a@example.com", sent)
    assert created["custom_fields"] == shown
    assert (await fetch(client, auth, created["id"]))["custom_fields"] == shown


async def test_custom_fields_appear_only_when_a_slot_is_set(client: Client, auth: Auth) -> None:
    bare = await create(client, auth, "bare@example.com")
    empty = await create(client, auth, "empty@example.com", {})
    one = await create(client, auth, "one@example.com", {"profile_field_3": "three"})
    for contact in (bare, empty):
        assert "custom_fields" not in contact
        assert "custom_fields" not in await fetch(client, auth, contact["id"])
    assert one["custom_fields"] == {"profile_field_3": "three"}
    assert (await fetch(client, auth, one["id"]))["custom_fields"] == {"profile_field_3": "three"}
    assert await listed_slots(client, auth) == {
        one["id"]: all_slots(profile_field_3="three"),
        empty["id"]: all_slots(),
        bare["id"]: all_slots(),
    }
    plain = (await client.get(CONTACTS, headers=auth)).json()["data"]
    assert ["custom_fields" in item for item in plain] == [False, False, False]


def slot_error(slot: int, rule: str, shown: str | None = None) -> tuple[str, str]:
    """A slot's error key and message; `shown` is the offending value, when the rule quotes it."""
    field = f"custom_fields.profile_field_{slot}"
    return field, f"The {field} field {rule}" + (f" ({shown})." if shown is not None else ".")


CONTROL = "must not contain control characters"
REFUSALS: list[tuple[Json, tuple[str, str]]] = [
    (
        {"profile_field_1": "y" * 10_241},
        slot_error(1, "must not be greater than 10240 characters", f'"{"y" * 60}…"'),
    ),
    ({"profile_field_2": "a\x00b"}, slot_error(2, CONTROL, '"a\\u0000b"')),
    ({"profile_field_3": "bell\x07"}, slot_error(3, CONTROL, '"bell\\u0007"')),
    ({"profile_field_4": "del\x7f"}, slot_error(4, CONTROL, '"del\\u007f"')),
    ({"profile_field_5": "c1\x85"}, slot_error(5, CONTROL, '"c1\\u0085"')),
    ({"profile_field_15": 5}, slot_error(15, "must be a string", "5")),
    ({"profile_field_16": "12"}, slot_error(16, "must be a number", '"12"')),
    ({"profile_field_17": True}, slot_error(17, "must be a number", "true")),
    ({"profile_field_25": [1]}, slot_error(25, "must be a number", "[1]")),
    ({"profile_field_26": "garbage"}, slot_error(26, DATE_RULE, '"garbage"')),
    ({"profile_field_27": "2026-13-01"}, slot_error(27, DATE_RULE, '"2026-13-01"')),
    ({"profile_field_28": "2026-02-30"}, slot_error(28, DATE_RULE, '"2026-02-30"')),
    ({"profile_field_29": "26/11/2026"}, slot_error(29, DATE_RULE, '"26/11/2026"')),
    ({"profile_field_30": ""}, slot_error(30, DATE_RULE, '""')),
    ({"profile_field_30": 20261126}, slot_error(30, "must be a string", "20261126")),
    # Valid ISO 8601, but beyond the last representable moment once converted to UTC.
    (
        {"profile_field_26": "9999-12-31T23:00:00-05:00"},
        slot_error(26, DATE_RULE, '"9999-12-31T23:00:00-05:00"'),
    ),
    (
        {"profile_field_27": "0001-01-01T00:30:00+01:00"},
        slot_error(27, DATE_RULE, '"0001-01-01T00:30:00+01:00"'),
    ),
    # ISO 8601 forms other than a calendar date or a date-time with T (or a space): refused.
    ({"profile_field_28": "2026-W48-4"}, slot_error(28, DATE_RULE, '"2026-W48-4"')),
    ({"profile_field_28": "20261126"}, slot_error(28, DATE_RULE, '"20261126"')),
    ({"profile_field_28": "2026-11-26X10:00"}, slot_error(28, DATE_RULE, '"2026-11-26X10:00"')),
    ({"profile_field_0": "x"}, slot_error(0, "is not allowed")),
    ({"profile_field_31": "x"}, slot_error(31, "is not allowed")),
    ({"foo": "x"}, ("custom_fields.foo", "The custom_fields.foo field is not allowed.")),
    ({"profile_field_1": None}, slot_error(1, "must not be null")),
    ({"profile_field_16": None}, slot_error(16, "must not be null")),
    ({"profile_field_26": None}, slot_error(26, "must not be null")),
]


@pytest.mark.parametrize(
    ("slots", "error"), REFUSALS, ids=[f"{k}={v!r}"[:40] for s, _ in REFUSALS for k, v in s.items()]
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_bad_slots_are_refused_and_store_nothing(
    client: Client, auth: Auth, method: str, slots: Json, error: tuple[str, str]
) -> None:
    field, message = error
    contact = await create(client, auth, "a@example.com", {"profile_field_1": "kept"})
    url = CONTACTS if method == "POST" else f"{CONTACTS}/{contact['id']}"
    first = {"emails": ["b@example.com"]} if method == "POST" else {"names": ["Changed"]}
    body = {**first, "custom_fields": slots}
    response = await client.request(method, url, json=body, headers=auth)
    assert response.status_code == 422
    assert answered(response) == one_error(field, message)
    assert await fetch(client, auth, contact["id"]) == contact
    assert await listed_slots(client, auth) == {contact["id"]: all_slots(profile_field_1="kept")}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e400", "Infinity")],
)
async def test_non_finite_numbers_are_refused(
    client: Client, auth: Auth, raw: str, shown: str
) -> None:
    body = f'{{"emails": ["a@example.com"], "custom_fields": {{"profile_field_16": {raw}}}}}'
    headers = {**auth, "Content-Type": "application/json"}
    response = await client.post(CONTACTS, content=body.encode(), headers=headers)
    assert response.status_code == 422
    assert answered(response) == one_error(*slot_error(16, "must be a finite number", shown))
    assert await listed_slots(client, auth) == {}


@pytest.mark.parametrize(
    ("custom_fields", "message"),
    [
        ([], "The custom_fields field must be an object ([])."),
        ("x", 'The custom_fields field must be an object ("x").'),
        (1, "The custom_fields field must be an object (1)."),
        (None, "The custom_fields field must not be null."),
    ],
)
async def test_custom_fields_must_be_an_object(
    client: Client, auth: Auth, custom_fields: Any, message: str
) -> None:
    response = await post(
        client, auth, {"emails": ["a@example.com"], "custom_fields": custom_fields}
    )
    assert response.status_code == 422
    assert answered(response) == one_error("custom_fields", message)


async def test_merge_overwrites_the_slots_sent(client: Client, auth: Auth) -> None:
    original = {"profile_field_1": "old", "profile_field_2": "kept", "profile_field_16": 1}
    first = await create(client, auth, "a@example.com", original)
    sent = {"profile_field_1": "new", "profile_field_16": 2.5, "profile_field_26": "2027-01-31"}
    response = await post(client, auth, {"emails": ["A@example.com"], "custom_fields": sent})
    assert response.status_code == 200
    merged = {
        "profile_field_1": "new",
        "profile_field_2": "kept",
        "profile_field_16": 2.5,
        "profile_field_26": "2027-01-31",
    }
    assert response.json()["id"] == first["id"]
    assert response.json()["custom_fields"] == merged
    assert (await fetch(client, auth, first["id"]))["custom_fields"] == merged
    assert await listed_slots(client, auth) == {first["id"]: all_slots(**merged)}


# A (slot 1), B (1, 2, 16) and C (2, 3, 16, 26) merged into A: A's slot wins, B fills 2 and 16
# before C can, C fills 3 and 26.
MERGED = {
    "profile_field_1": "a",
    "profile_field_2": "b",
    "profile_field_3": "c",
    "profile_field_16": 2,
    "profile_field_26": "2026-03-03",
}


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (None, MERGED),
        (
            {"profile_field_2": "r", "profile_field_4": "r"},
            {**MERGED, "profile_field_2": "r", "profile_field_4": "r"},
        ),
    ],
)
async def test_merged_contacts_fill_the_survivors_empty_slots_in_id_order(
    client: Client, auth: Auth, sent: Json | None, expected: Json
) -> None:
    a = await create(client, auth, "a@example.com", {"profile_field_1": "a"})
    b = await create(
        client,
        auth,
        "b@example.com",
        {"profile_field_1": "b", "profile_field_2": "b", "profile_field_16": 2},
    )
    c = await create(
        client,
        auth,
        "c@example.com",
        {
            "profile_field_2": "c",
            "profile_field_3": "c",
            "profile_field_16": 3,
            "profile_field_26": "2026-03-03",
        },
    )
    body: Json = {"emails": ["c@example.com", "b@example.com", "a@example.com"]}
    if sent is not None:
        body["custom_fields"] = sent
    response = await post(client, auth, body)
    assert response.status_code == 200
    assert response.json()["id"] == a["id"]
    assert response.json()["custom_fields"] == expected
    for alias in (a, b, c):
        assert (await fetch(client, auth, alias["id"]))["custom_fields"] == expected
    assert await listed_slots(client, auth) == {a["id"]: all_slots(**expected)}


async def test_put_replaces_all_slots(client: Client, auth: Auth) -> None:
    contact = await create(client, auth, "a@example.com", SENT)
    sent = {"profile_field_2": "only", "profile_field_17": 8.0, "profile_field_27": "2026-01-01"}
    shown = {**sent, "profile_field_17": 8}
    response = await client.put(
        f"{CONTACTS}/{contact['id']}", json={"custom_fields": sent}, headers=auth
    )
    assert response.status_code == 200
    assert answered(response) == {"id": contact["id"], "custom_fields": shown}
    after = await fetch(client, auth, contact["id"])
    assert after["custom_fields"] == shown
    assert after["emails"] == ["a@example.com"]
    assert await listed_slots(client, auth) == {contact["id"]: all_slots(**shown)}


async def test_put_empty_object_clears_every_slot(client: Client, auth: Auth) -> None:
    contact = await create(client, auth, "a@example.com", SENT)
    response = await client.put(
        f"{CONTACTS}/{contact['id']}", json={"custom_fields": {}}, headers=auth
    )
    assert response.status_code == 200
    assert answered(response) == {"id": contact["id"], "custom_fields": {}}
    assert "custom_fields" not in await fetch(client, auth, contact["id"])
    assert await listed_slots(client, auth) == {contact["id"]: all_slots()}


async def test_put_without_custom_fields_leaves_them(client: Client, auth: Auth) -> None:
    contact = await create(client, auth, "a@example.com", SENT)
    response = await client.put(
        f"{CONTACTS}/{contact['id']}", json={"names": ["Named"]}, headers=auth
    )
    assert response.status_code == 200
    assert answered(response) == {"id": contact["id"], "names": ["Named"]}
    after = await fetch(client, auth, contact["id"])
    assert after["custom_fields"] == SHOWN
    assert after["names"] == ["Named"]
    assert await listed_slots(client, auth) == {contact["id"]: all_slots(**SHOWN)}

"""custom_field_filters through the API (SPEC 6.7): both encodings of the list's query, the
export's body, with the other filters and cursors; and slots named by their labels. The
operators themselves are held to their meaning in test_custom_field_filters.py."""

import json
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI

from contactbase.db import Database
from contactbase.spaces import service
from tests.contacts.test_exports import ALL_TIME, export
from tests.factories import CONTACTS, add_contact, bearer, make_key, make_space

PLANS = [("gold", 120), ("gold", 80), ("silver", 150), ("gold", 200), ("bronze", 300)]
GOLD_OVER_100: list[dict[str, Any]] = [
    {"field": "profile_field_1", "operator": "equal_to", "value": "GOLD"},
    {"field": "profile_field_16", "operator": "greater_than", "value": 100},
]


async def tenant_with_plans(db: Database, client: httpx.AsyncClient) -> tuple[int, Any, list[int]]:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    ids = []
    for n, (plan, spent) in enumerate(PLANS):
        body = {
            "emails": [f"p{n}@example.com"],
            "phones": [f"+1555000{n:04d}"],
            "custom_fields": {"profile_field_1": plan, "profile_field_16": spent},
        }
        ids.append((await add_contact(client, auth, body))["id"])
    await add_contact(client, auth, {"emails": ["blank@example.com"]})
    return space_id, auth, ids


def listed(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["data"]]


def brackets(conditions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """As PHP's http_build_query writes them (urlencode then encodes the brackets)."""
    return [
        (f"custom_field_filters[{n}][{key}]", str(value))
        for n, condition in enumerate(conditions)
        for key, value in condition.items()
    ]


async def test_both_encodings_select_the_same_contacts(
    client: httpx.AsyncClient, db: Database
) -> None:
    _space, auth, ids = await tenant_with_plans(db, client)
    as_json = await client.get(
        CONTACTS, params={"custom_field_filters": json.dumps(GOLD_OVER_100)}, headers=auth
    )
    assert listed(as_json) == [ids[3], ids[0]]
    query = urlencode(brackets(GOLD_OVER_100))
    assert "custom_field_filters%5B0%5D%5Bfield%5D=profile_field_1" in query
    as_brackets = await client.get(f"{CONTACTS}?{query}", headers=auth)
    assert listed(as_brackets) == [ids[3], ids[0]]


async def test_pages_carry_the_filters_and_cursors_are_bound_to_them(
    client: httpx.AsyncClient, db: Database
) -> None:
    _space, auth, ids = await tenant_with_plans(db, client)
    gold = [{"field": "profile_field_1", "operator": "equal_to", "value": "gold"}]
    first = await client.get(
        f"{CONTACTS}?{urlencode([*brackets(gold), ('per_page', '2')])}", headers=auth
    )
    assert listed(first) == [ids[3], ids[1]]
    second = await client.get(first.json()["next_page_url"], headers=auth)
    assert listed(second) == [ids[0]]
    assert second.json()["next_cursor"] is None
    back = await client.get(second.json()["prev_page_url"], headers=auth)
    assert listed(back) == [ids[3], ids[1]]

    cursor = first.json()["next_cursor"]
    silver = [{"field": "profile_field_1", "operator": "equal_to", "value": "silver"}]
    elsewhere = await client.get(
        CONTACTS,
        params={"custom_field_filters": json.dumps(silver), "cursor": cursor},
        headers=auth,
    )
    assert elsewhere.status_code == 422
    assert list(elsewhere.json()["errors"]) == ["cursor"]
    unfiltered = await client.get(CONTACTS, params={"cursor": cursor}, headers=auth)
    assert unfiltered.status_code == 422
    same_in_json = await client.get(
        CONTACTS,
        params={"custom_field_filters": json.dumps(gold), "cursor": cursor, "per_page": "2"},
        headers=auth,
    )
    assert listed(same_in_json) == [ids[0]]


async def test_filters_combine_with_the_other_filters(
    client: httpx.AsyncClient, db: Database
) -> None:
    _space, auth, ids = await tenant_with_plans(db, client)
    gold = json.dumps([{"field": "profile_field_1", "operator": "equal_to", "value": "gold"}])
    by_email = await client.get(
        CONTACTS, params={"custom_field_filters": gold, "email": "p1@example.com"}, headers=auth
    )
    assert listed(by_email) == [ids[1]]
    by_phone = await client.get(
        CONTACTS, params={"custom_field_filters": gold, "phone": "+15550000002"}, headers=auth
    )
    assert listed(by_phone) == []
    window = await client.get(
        CONTACTS,
        params={"custom_field_filters": gold, "end_date": "2000-01-01 00:00:00"},
        headers=auth,
    )
    assert listed(window) == []
    unset = json.dumps([{"field": "profile_field_1", "operator": "unknown"}])
    assert (
        len(
            listed(await client.get(CONTACTS, params={"custom_field_filters": unset}, headers=auth))
        )
        == 1
    )


async def test_a_wrong_filter_is_422_keyed_by_its_place(
    client: httpx.AsyncClient, db: Database
) -> None:
    _space, auth, _ids = await tenant_with_plans(db, client)
    wrong = [
        {"field": "profile_field_1", "operator": "equal_to", "value": "gold"},
        {"field": "profile_field_16", "operator": "contains", "value": "1"},
    ]
    response = await client.get(
        CONTACTS, params={"custom_field_filters": json.dumps(wrong)}, headers=auth
    )
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["custom_field_filters.1.operator"]
    as_brackets = await client.get(f"{CONTACTS}?{urlencode(brackets(wrong))}", headers=auth)
    assert as_brackets.json()["errors"] == response.json()["errors"]
    eleven = [{"field": "profile_field_1", "operator": "any"}] * 11
    too_many = await client.get(
        CONTACTS, params={"custom_field_filters": json.dumps(eleven)}, headers=auth
    )
    assert too_many.status_code == 422
    assert list(too_many.json()["errors"]) == ["custom_field_filters"]


async def test_labels_name_the_slots_when_asked(client: httpx.AsyncClient, db: Database) -> None:
    space_id, auth, ids = await tenant_with_plans(db, client)
    async with db.writer() as session, session.begin():
        await service.set_label(session, space_id, "profile_field_1", "Plan")
    labelled = await client.get(
        CONTACTS,
        params={"include_custom_fields": "1", "use_custom_field_labels": "1", "per_page": "1"},
        headers=auth,
    )
    fields = labelled.json()["data"][0]["custom_fields"]
    assert "Plan" in fields
    assert "profile_field_1" not in fields
    assert fields["profile_field_16"] is None  # no label: the slot's name
    assert len(fields) == 30
    plain = await client.get(
        CONTACTS, params={"include_custom_fields": "1", "per_page": "1"}, headers=auth
    )
    assert "profile_field_1" in plain.json()["data"][0]["custom_fields"]
    alone = await client.get(CONTACTS, params={"use_custom_field_labels": "1"}, headers=auth)
    assert "custom_fields" not in alone.json()["data"][0]
    assert ids


async def test_an_export_keeps_only_the_contacts_its_filters_select(
    client: httpx.AsyncClient, app: FastAPI, db: Database
) -> None:
    _space, auth, ids = await tenant_with_plans(db, client)
    lines = await export(client, app, auth, {**ALL_TIME, "custom_field_filters": GOLD_OVER_100})  # type: ignore[dict-item]
    assert sorted(row["id"] for row in lines) == sorted([ids[0], ids[3]])
    wrong = [{"field": "profile_field_16", "operator": "contains", "value": "1"}]
    refused = await client.post(
        f"{CONTACTS}/exports", json={**ALL_TIME, "custom_field_filters": wrong}, headers=auth
    )
    assert refused.status_code == 422
    assert list(refused.json()["errors"]) == ["custom_field_filters.0.operator"]
    as_text = await client.post(
        f"{CONTACTS}/exports",
        json={**ALL_TIME, "custom_field_filters": json.dumps(GOLD_OVER_100)},
        headers=auth,
    )
    assert as_text.status_code == 422  # in a body the array is an array

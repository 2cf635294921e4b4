"""GET /contacts: the creation window and the look-ups."""

import json
from datetime import UTC, datetime

import httpx
import pytest

from contactbase.db import Database
from tests.contacts.test_list import (
    NEW_YORK,
    ONE,
    add,
    add_many,
    ids,
    invalid,
    local,
    page,
    seed_summary,
    summary,
)
from tests.factories import CONTACTS, SEED, answered, bearer, make_key, make_space, make_tenant


async def test_dates_are_local_to_the_space_and_inclusive(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = bearer(await make_key(db, await make_space(db, "NY", "America/New_York")))
    before = datetime.now(NEW_YORK).replace(tzinfo=None, microsecond=0)
    created = await add_many(client, auth, 2)
    after = datetime.now(NEW_YORK).replace(tzinfo=None, microsecond=0) + ONE
    newest = created[::-1]

    async def window(start: datetime | None, end: datetime | None) -> list[int]:
        params = [("start_date", local(start))] if start else []
        params += [("end_date", local(end))] if end else []
        return ids(await page(client, auth, params))

    assert await window(before, after) == newest
    assert await window(before, None) == newest
    assert await window(None, after) == newest
    assert await window(after + ONE, None) == []
    assert await window(None, before - ONE) == []
    # The same wall-clock time read as UTC is hours later than New York's: nothing yet.
    utc_now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    assert await window(utc_now - 5 * ONE, None) == []
    # Both bounds include the second of creation, as New York's clock showed it.
    seconds: dict[int, datetime] = {}
    for contact in created:
        shown = (await client.get(f"{CONTACTS}/{contact}", headers=auth)).json()["created_at"]
        utc = datetime.strptime(shown, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        seconds[contact] = utc.astimezone(NEW_YORK).replace(tzinfo=None)
    for second in seconds.values():
        assert await window(second, second) == [c for c in newest if seconds[c] == second]
        assert await window(second + ONE, None) == [c for c in newest if seconds[c] > second]
        assert await window(None, second - ONE) == [c for c in newest if seconds[c] < second]


@pytest.mark.parametrize("field", ["start_date", "end_date"])
@pytest.mark.parametrize(
    "value",
    ["2026-01-01", "2026-01-01T00:00:00", "2026-01-01 00:00", "2026-02-30 00:00:00", "yesterday"],
)
async def test_bad_date_format_is_422(
    client: httpx.AsyncClient, db: Database, field: str, value: str
) -> None:
    auth = await make_tenant(db)
    response = await client.get(CONTACTS, params={field: value}, headers=auth)
    assert response.status_code == 422
    message = f"The {field} field must match the format YYYY-MM-DD HH:MM:SS ({json.dumps(value)})."
    assert answered(response) == invalid(field, message)


async def test_end_before_start_is_422(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    params = {"start_date": "2026-01-02 00:00:00", "end_date": "2026-01-01 23:59:59"}
    response = await client.get(CONTACTS, params=params, headers=auth)
    assert response.status_code == 422
    message = (
        'The end_date field must be a date after or equal to start_date ("2026-01-01 23:59:59").'
    )
    assert answered(response) == invalid("end_date", message)
    same = {"start_date": "2026-01-02 00:00:00", "end_date": "2026-01-02 00:00:00"}
    assert (await client.get(CONTACTS, params=same, headers=auth)).status_code == 200


async def test_email_look_up(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    seed = await add(client, auth, SEED)
    await add(client, auth, {"emails": ["other@example.com"]})
    for email in ("john@example.com", "  JOHN@Example.COM ", "Johnny@EXAMPLE.com"):
        assert (await page(client, auth, [("email", email)]))["data"] == [seed_summary(seed)]
    assert (await page(client, auth, [("email", "nobody@example.com")]))["data"] == []
    assert (await page(client, auth, [("email", "john")]))["data"] == []


async def test_phone_look_up_by_digits(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    seed = await add(client, auth, SEED)
    sharing = await add(client, auth, {"emails": ["b@example.com"], "phones": ["234-567"]})
    also = await add(client, auth, {"emails": ["c@example.com"], "phones": ["(0) 98765-4321"]})
    for phone in ("+1 (234) 567-890", "1234567890", "+1.234.567.890"):
        assert ids(await page(client, auth, [("phone", phone)])) == [seed], phone
    # A secondary phone finds its contact; contacts sharing the digits all appear, newest first.
    assert ids(await page(client, auth, [("phone", "+0987654321")])) == [also, seed]
    assert ids(await page(client, auth, [("phone", "234 567")])) == [sharing]
    assert ids(await page(client, auth, [("phone", "+1 234")])) == []


async def test_merged_away_contacts_do_not_appear(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    first, _second, third = await add_many(client, auth, 3)
    await add(client, auth, {"emails": ["c0@example.com", "c1@example.com"]})
    assert ids(await page(client, auth)) == [third, first]
    found = await page(client, auth, [("email", "c1@example.com")])
    assert found["data"] == [summary(first, "c0@example.com")]
    walked = await page(client, auth, [("per_page", "1")])
    rest = await page(client, auth, walked["next_page_url"])
    assert [ids(walked), ids(rest), rest["next_cursor"]] == [[third], [first], None]


async def test_another_spaces_contacts_never_appear(
    client: httpx.AsyncClient, db: Database
) -> None:
    space_a = await make_tenant(db, "A")
    space_b = await make_tenant(db, "B")
    mine, theirs = [], []
    for n in range(3):
        mine.append(await add(client, space_a, {"emails": [f"{n}@a.example"]}))
        theirs.append(
            await add(client, space_b, {"emails": [f"{n}@b.example"], "phones": ["5550"]})
        )
    assert ids(await page(client, space_a)) == mine[::-1]
    assert ids(await page(client, space_b)) == theirs[::-1]
    assert (await page(client, space_a, [("email", "0@b.example")]))["data"] == []
    assert (await page(client, space_a, [("phone", "5550")]))["data"] == []


async def test_include_options(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    seed = await add(client, auth, SEED)
    first, _second = await add_many(client, auth, 2)
    await add(client, auth, {"emails": ["c1@example.com", "c0@example.com", "z@example.com"]})
    plain = (await page(client, auth))["data"]
    assert plain == [summary(first, "c0@example.com"), seed_summary(seed)]
    all_emails = [
        ["c0@example.com", "c1@example.com", "z@example.com"],
        ["john@example.com", "johnny@example.com"],
    ]
    emails = await page(client, auth, [("include_all_emails", "1")])
    assert emails["data"] == [
        {**item, "emails": every} for item, every in zip(plain, all_emails, strict=True)
    ]
    tokens = await page(client, auth, [("include_comet_tokens", "1")])
    assert tokens["data"] == [{**item, "comet_tokens": []} for item in plain]
    slots = {f"profile_field_{n}": None for n in range(1, 31)}
    custom = await page(client, auth, [("include_custom_fields", "true")])
    assert custom["data"] == [{**item, "custom_fields": slots} for item in plain]
    labels = await page(client, auth, [("use_custom_field_labels", "1")])
    assert labels["data"] == plain
    off = await page(client, auth, [("include_all_emails", "0"), ("include_comet_tokens", "0")])
    assert off["data"] == plain


@pytest.mark.parametrize("name", ["page", "sort", "limit"])
async def test_unknown_query_parameter_is_422(
    client: httpx.AsyncClient, db: Database, name: str
) -> None:
    auth = await make_tenant(db)
    response = await client.get(CONTACTS, params={name: "1"}, headers=auth)
    assert response.status_code == 422
    assert answered(response) == invalid(name, f"The {name} field is not allowed.")

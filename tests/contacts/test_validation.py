"""POST /contacts refusals: every 422 with its field path and exact message, 413 for big bodies,
and that a refused request stores nothing."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from contactbase.db import Database
from tests.factories import CONTACTS, SEED, answered, make_tenant

Client = httpx.AsyncClient
Auth = dict[str, str]
OK = "a@example.com"
LIMIT = 1024 * 1024
TOO_LARGE = {"message": f"The request body is larger than {LIMIT} bytes."}
NOT_AN_OBJECT = "The request body must be a JSON object."
TABLES = ("contacts", "contact_emails", "contact_phones", "contact_names", "contact_locations")
NOTHING = dict.fromkeys(TABLES, 0)
# A valid address of exactly 254 characters: 64-character local part, 189-character domain.
EMAIL_254 = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
VALID_PHONES = (
    *("+1234567890", "+0987654321", "1234", "1" * 20, "+1 (234) 567-890", "1.23.4"),
    *("123.456.7890", "(555) 123-4567", "+44 20 7946 0958"),
)
PHONE_RULE = "4 to 20 digits, optionally a leading +, spaces, dashes, dots or parentheses"


def bad_email(field: str, shown: str) -> str:
    return f"The {field} field must be a valid email address ({shown})."


def bad_phone(field: str, shown: str) -> str:
    return f"The {field} field must be a valid phone number: {PHONE_RULE} ({shown})."


def one_error(field: str, message: str) -> dict[str, Any]:
    """The whole 422 body for a single error."""
    return {"message": message, "errors": {field: [message]}}


def invalid_json(reason: str) -> dict[str, Any]:
    return one_error("body", f"The request body must be valid JSON ({reason}).")


async def stored(db: Database) -> dict[str, int]:
    """Rows in every contact table, straight from the database."""
    async with db.reader() as session:
        return {
            table: (await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            for table in TABLES
        }


@pytest.fixture
async def auth(db: Database) -> Auth:
    """The Authorization header of a new Space's read-write key."""
    return await make_tenant(db)


async def post(client: Client, auth: Auth, body: Any) -> httpx.Response:
    return await client.post(CONTACTS, json=body, headers=auth)


async def send_raw(client: Client, auth: Auth, body: bytes) -> httpx.Response:
    headers = {**auth, "Content-Type": "application/json"}
    return await client.post(CONTACTS, content=body, headers=headers)


def text_refusals(kind: str) -> list[tuple[dict[str, Any], str, str]]:
    """Names or locations: blank after trimming, over 255 characters, control characters."""
    field = f"{kind}.1"
    control = f"The {field} field must not contain control characters"
    cases = [
        ("", f'The {field} field must not be empty ("").'),
        ("  \t\n ", f'The {field} field must not be empty ("  \\t\\n ").'),
        (
            "\u00a0\u3000",
            f'The {field} field must not be empty ("\u00a0\u3000").',
        ),  # Unicode spaces
        ("x" * 256, f'The {field} field must not be greater than 255 characters ("{"x" * 60}…").'),
        ("a\u0000b", f'{control} ("a\\u0000b").'),
        ("a\u0007b", f'{control} ("a\\u0007b").'),
        ("a\u007fb", f'{control} ("a\\u007fb").'),
        ("a\u0085b", f'{control} ("a\\u0085b").'),
        ("a\tb", f'{control} ("a\\tb").'),
    ]
    return [({"emails": [OK], kind: ["Fine", value]}, field, message) for value, message in cases]


def too_many(kind: str, value: str) -> tuple[dict[str, Any], str, str]:
    body = {"emails": [OK], kind: [value] * 101}
    return body, kind, f"The {kind} field must not have more than 100 items (101 sent)."


LONG_PHONE = "1-2-3-4-5-6-7-8-9-0-1-2-3-4-5-6-7"
TOO_LONG_PHONE = f'The phones.0 field must not be greater than 32 characters ("{LONG_PHONE}").'


def phone(value: str) -> dict[str, Any]:
    return {"emails": [OK], "phones": [value]}


SINGLE_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    # Shape: missing, empty, wrong types, nulls, unknown fields.
    ({}, "emails", "The emails field is required."),
    ({"names": ["John"]}, "emails", "The emails field is required."),
    ({"emails": []}, "emails", "The emails field must have at least 1 item(s) ([])."),
    ({"emails": OK}, "emails", f'The emails field must be an array ("{OK}").'),
    ({"emails": {"0": OK}}, "emails", f'The emails field must be an array ({{"0": "{OK}"}}).'),
    ({"emails": [1]}, "emails.0", "The emails.0 field must be a string (1)."),
    ({"emails": [1.5]}, "emails.0", "The emails.0 field must be a string (1.5)."),
    ({"emails": [True]}, "emails.0", "The emails.0 field must be a string (true)."),
    (
        {"emails": [{"email": OK}]},
        "emails.0",
        f'The emails.0 field must be a string ({{"email": "{OK}"}}).',
    ),
    ({"emails": [[OK]]}, "emails.0", f'The emails.0 field must be a string (["{OK}"]).'),
    ({"emails": [OK, None]}, "emails.1", "The emails.1 field must not be null."),
    ({"emails": None}, "emails", "The emails field must not be null."),
    ({"emails": [OK], "phones": None}, "phones", "The phones field must not be null."),
    ({"emails": [OK], "names": None}, "names", "The names field must not be null."),
    ({"emails": [OK], "locations": None}, "locations", "The locations field must not be null."),
    ({"emails": [OK], "phones": [None]}, "phones.0", "The phones.0 field must not be null."),
    ({"emails": [OK], "phones": "1234"}, "phones", 'The phones field must be an array ("1234").'),
    ({"emails": [OK], "phones": [1234]}, "phones.0", "The phones.0 field must be a string (1234)."),
    ({"emails": [OK], "names": [42]}, "names.0", "The names.0 field must be a string (42)."),
    ({"emails": [OK], "phone": ["1234"]}, "phone", "The phone field is not allowed."),
    ({"emails": [OK], "Emails": [OK]}, "Emails", "The Emails field is not allowed."),
    # Emails: syntax as email-validator judges it, at most 254 characters after trimming.
    ({"emails": [OK, "not-an-email"]}, "emails.1", bad_email("emails.1", '"not-an-email"')),
    *(
        ({"emails": [email]}, "emails.0", bad_email("emails.0", json.dumps(email)))
        for email in [
            *("a@@example.com", "a b@example.com", "@example.com", "a@", "a@example..com"),
            *("a@example.com.", "a@b", "plain", "John <john@example.com>", "a@[127.0.0.1]"),
            '"a b"@example.com',
            "a\u0000b@example.com",  # shown escaped, as JSON
            "a@exa\u0007mple.com",
        ]
    ),
    ({"emails": ["x" * 80]}, "emails.0", bad_email("emails.0", f'"{"x" * 60}…"')),  # shortened
    ({"emails": [" \t "]}, "emails.0", 'The emails.0 field must not be empty (" \\t ").'),
    (
        {"emails": ["a" + EMAIL_254]},
        "emails.0",
        f'The emails.0 field must not be greater than 254 characters ("a{EMAIL_254[:59]}…").',
    ),
    # Phones: 4-20 digits, optional leading +, separators, at most 32 characters.
    *(
        (phone(value), "phones.0", bad_phone("phones.0", json.dumps(value, ensure_ascii=False)))
        for value in [
            *("12a4", "phone", "123", "1" * 21, "++1234", "123+4567", "+", "1234#"),
            *("1234/5678", "1234\t5678", "\u0661\u0662\u0663\u0664"),  # Arabic-Indic digits
        ]
    ),
    (phone(""), "phones.0", 'The phones.0 field must not be empty ("").'),
    (phone("   "), "phones.0", 'The phones.0 field must not be empty ("   ").'),
    (phone("1-2-3-4-5-6-7-8-9-0-1-2-3-4-5-6-7"), "phones.0", TOO_LONG_PHONE),
    *text_refusals("names"),
    *text_refusals("locations"),
    # At most 100 items as sent, repeats included.
    too_many("emails", OK),
    too_many("phones", "1234"),
    too_many("names", "A"),
    too_many("locations", "B"),
]


@pytest.mark.parametrize(("body", "field", "message"), SINGLE_ERRORS)
async def test_single_error_is_422_naming_field_and_value(
    client: Client, db: Database, auth: Auth, body: Any, field: str, message: str
) -> None:
    """Each refusal: 422, the exact field path and message, and nothing stored."""
    response = await post(client, auth, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert answered(response) == one_error(field, message)
    assert await stored(db) == NOTHING


async def test_typo_field_is_refused_and_nothing_is_stored(client: Client, auth: Auth) -> None:
    response = await post(client, auth, {"emails": [OK], "phone": ["+1234567890"]})
    assert response.status_code == 422
    assert answered(response) == one_error("phone", "The phone field is not allowed.")
    listed = await client.get(CONTACTS, headers=auth)
    assert listed.json()["data"] == []


@pytest.mark.parametrize(
    ("kind", "sent", "kept"),
    [
        *(("phones", value, value) for value in VALID_PHONES),
        ("phones", " +1 (234) 567-890 (123) 456-78.90 ", "+1 (234) 567-890 (123) 456-78.90"),
        ("emails", f"  {EMAIL_254} ", EMAIL_254),
        ("names", f" {'é' * 255} ", "é" * 255),
        ("locations", "\U0001f600" * 255, "\U0001f600" * 255),  # 1,020 bytes of UTF-8
    ],
)
async def test_value_at_the_limits_is_stored_trimmed(
    client: Client, auth: Auth, kind: str, sent: str, kept: str
) -> None:
    """Valid phones, a 254-character email, 255-character names and locations (32 for phones)."""
    response = await post(client, auth, {"emails": [OK], kind: [sent]})
    assert response.status_code == 201
    assert response.json()[kind] == [kept]


async def test_surrogate_pair_is_accepted(client: Client, auth: Auth) -> None:
    body = b'{"emails": ["a@example.com"], "names": ["\\ud83d\\ude00 smile"]}'
    response = await send_raw(client, auth, body)
    assert response.status_code == 201
    assert response.json()["names"] == ["\U0001f600 smile"]


async def test_100_items_of_each_kind_are_accepted(
    client: Client, db: Database, auth: Auth
) -> None:
    body = {
        "emails": [f"user{n}@example.com" for n in range(100)],
        "phones": [f"+1 555 {n:04d}" for n in range(100)],
        "names": [f"Name {n}" for n in range(100)],
        "locations": [f"Place {n}" for n in range(100)],
    }
    response = await post(client, auth, body)
    assert response.status_code == 201
    assert {kind: response.json()[kind] for kind in body} == body
    assert await stored(db) == {"contacts": 1, **{table: 100 for table in TABLES[1:]}}


async def test_repeats_are_dropped_keeping_the_first(client: Client, auth: Auth) -> None:
    """Emails by trimmed lower case, phones by digits, names and locations exactly (trimmed)."""
    body = {
        "emails": [" John@Example.com ", "john@example.com", "JOHN@EXAMPLE.COM", "b@example.com"],
        "phones": ["+1 (234) 567-890", "1234567890", "+0987654321", "123.456.7890"],
        "names": ["John", " John ", "john", "JOHN", "John"],
        "locations": ["New York, NY", "New York, NY ", "new york, ny"],
    }
    expected = {
        "emails": ["John@Example.com", "b@example.com"],
        "phones": ["+1 (234) 567-890", "+0987654321"],
        "names": ["John", "john", "JOHN"],
        "locations": ["New York, NY", "new york, ny"],
    }
    created = (await post(client, auth, body)).json()
    assert {kind: created[kind] for kind in expected} == expected
    fetched = (await client.get(f"{CONTACTS}/{created['id']}", headers=auth)).json()
    assert {kind: fetched[kind] for kind in expected} == expected


async def test_unicode_values_round_trip(client: Client, auth: Auth) -> None:
    body = {
        "emails": ["José@example.com", "josé@EXAMPLE.com", "用户@例子.广告", "Müller@exämple.de"],
        "names": ["José Müller", "用户", "עברית", "e\u0301", "\U0001f600", "a\u200bb"],
        "locations": ["Zürich, Schweiz", "東京都"],
    }
    response = await post(client, auth, body)
    assert response.status_code == 201
    created = response.json()
    expected = {**body, "emails": ["José@example.com", "用户@例子.广告", "Müller@exämple.de"]}
    assert {kind: created[kind] for kind in expected} == expected
    fetched = await client.get(f"{CONTACTS}/{created['id']}", headers=auth)
    assert answered(fetched) == created


BAD_JSON = [
    (b'{"emails": [', "EOF while parsing a list at line 1 column 12"),
    (b"", "EOF while parsing a value at line 1 column 0"),
    (b'{"emails": []} x', "trailing characters at line 1 column 16"),
    (b"{'emails': []}", "key must be a string at line 1 column 2"),
    # Lone surrogates, escaped or as UTF-8 bytes, cannot be stored: refused.
    (b'{"names": ["\\ud800"]}', "unexpected end of hex escape at line 1 column 19"),
    (b'{"names": ["\\udc00"]}', "lone leading surrogate in hex escape at line 1 column 18"),
    (b'{"names": ["\\ud800\\u0041"]}', "lone leading surrogate in hex escape at line 1 column 24"),
    (b'{"names": ["\xed\xa0\x80"]}', "invalid unicode code point at line 1 column 13"),
    # 10,000 levels deep: refused by the parser, not a 500.
    (b"[" * 10_000 + b"]" * 10_000, "recursion limit exceeded at line 1 column 202"),
    (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "recursion limit exceeded at line 1 column 1006"),
    (
        b'{"emails": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        "recursion limit exceeded at line 1 column 212",
    ),
]


@pytest.mark.parametrize(("body", "reason"), BAD_JSON)
async def test_unparseable_body_is_422(
    client: Client, db: Database, auth: Auth, body: bytes, reason: str
) -> None:
    """Malformed, empty, lone surrogates, deeply nested: 422 under `body`, nothing stored."""
    response = await send_raw(client, auth, body)
    assert response.status_code == 422
    assert answered(response) == invalid_json(reason)
    assert await stored(db) == NOTHING


@pytest.mark.parametrize(
    "body", [b"[]", b'[{"emails": ["a@b.com"]}]', b'"a@b.com"', b"42", b"true"]
)
async def test_body_not_a_json_object_is_422(client: Client, auth: Auth, body: bytes) -> None:
    response = await send_raw(client, auth, body)
    assert response.status_code == 422
    assert answered(response) == one_error("body", NOT_AN_OBJECT)


async def test_body_fields_named_like_locations_keep_their_own_key(
    client: Client, auth: Auth
) -> None:
    """A body field called path, query or body is reported under its own name."""
    response = await post(client, auth, {"emails": [OK], "path": 1, "query": 2})
    assert response.status_code == 422
    assert response.json()["errors"] == {
        "path": ["The path field is not allowed."],
        "query": ["The query field is not allowed."],
    }


async def test_summary_counts_one_more_error(client: Client, auth: Auth) -> None:
    response = await post(client, auth, {"emails": ["bad"], "phones": [""]})
    first = 'The emails.0 field must be a valid email address ("bad").'
    assert response.status_code == 422
    assert answered(response) == {
        "message": f"{first} (and 1 more error)",
        "errors": {"emails.0": [first], "phones.0": ['The phones.0 field must not be empty ("").']},
    }


async def test_summary_counts_more_errors(client: Client, auth: Auth) -> None:
    body = {"emails": [OK, "bad"], "names": [" "], "locations": None, "phone": []}
    response = await post(client, auth, body)
    first = 'The emails.1 field must be a valid email address ("bad").'
    assert response.status_code == 422
    assert answered(response) == {
        "message": f"{first} (and 3 more errors)",
        "errors": {
            "emails.1": [first],
            "names.0": ['The names.0 field must not be empty (" ").'],
            "locations": ["The locations field must not be null."],
            "phone": ["The phone field is not allowed."],
        },
    }


@pytest.mark.parametrize("authorised", [True, False])
async def test_body_over_the_limit_is_413(
    client: Client, db: Database, auth: Auth, authorised: bool
) -> None:
    """With Content-Length; the size check comes before authentication."""
    body = json.dumps({"emails": [OK], "names": ["x" * LIMIT]}).encode()
    response = await send_raw(client, auth if authorised else {}, body)
    assert response.status_code == 413
    assert answered(response) == TOO_LARGE
    assert len(response.headers["x-request-id"]) == 32
    assert await stored(db) == NOTHING


async def test_body_of_exactly_the_limit_is_accepted(client: Client, auth: Auth) -> None:
    body = json.dumps({"emails": [OK]}).encode().ljust(LIMIT)
    response = await send_raw(client, auth, body)
    assert response.status_code == 201
    too_big = await send_raw(client, auth, body + b" ")
    assert too_big.status_code == 413
    assert answered(too_big) == TOO_LARGE


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_streamed_body_over_the_limit_is_413(
    client: Client, db: Database, auth: Auth
) -> None:
    """Without Content-Length (chunked), the limit still holds."""
    parts = [b'{"emails": ["a@example.com"], "names": ["'] + [b"x" * 65_536] * 17 + [b'"]}']
    response = await client.post(CONTACTS, content=chunks(parts), headers=auth)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert answered(response) == TOO_LARGE
    assert await stored(db) == NOTHING


async def test_streamed_body_under_the_limit_is_accepted(client: Client, auth: Auth) -> None:
    parts = [b'{"emails": [', b'"a@exa', b'mple.com"', b"]}"]
    response = await client.post(CONTACTS, content=chunks(parts), headers=auth)
    assert response.status_code == 201
    assert response.json()["emails"] == [OK]


ON_CONFLICT = "The on_conflict field must be 'merge' or 'error' ({})."


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("on_conflict=bogus", "on_conflict", ON_CONFLICT.format('"bogus"')),
        ("on_conflict=", "on_conflict", ON_CONFLICT.format('""')),
        ("on_conflict=ERROR", "on_conflict", ON_CONFLICT.format('"ERROR"')),
        ("foo=1", "foo", "The foo field is not allowed."),
        ("emails=a@example.com", "emails", "The emails field is not allowed."),
    ],
)
async def test_bad_query_is_422(
    client: Client, db: Database, auth: Auth, query: str, field: str, message: str
) -> None:
    """A bad on_conflict value or an unknown query parameter; nothing stored."""
    response = await client.post(f"{CONTACTS}?{query}", json=SEED, headers=auth)
    assert response.status_code == 422
    assert answered(response) == one_error(field, message)
    assert await stored(db) == NOTHING


async def test_one_bad_phone_stores_nothing(client: Client, db: Database, auth: Auth) -> None:
    """The whole request is refused: the valid emails are not stored either."""
    response = await post(client, auth, {**SEED, "phones": ["+1234567890", "call me"]})
    assert response.status_code == 422
    assert answered(response) == one_error("phones.1", bad_phone("phones.1", '"call me"'))
    assert await stored(db) == NOTHING
    retried = await post(client, auth, SEED)
    assert retried.status_code == 201


async def test_refused_merge_leaves_the_contact_unchanged(client: Client, auth: Auth) -> None:
    created = (await post(client, auth, SEED)).json()
    body = {"emails": ["john@example.com", "new@example.com"], "names": ["New", "\u0000"]}
    response = await post(client, auth, body)
    message = 'The names.1 field must not contain control characters ("\\u0000").'
    assert answered(response) == one_error("names.1", message)
    fetched = await client.get(f"{CONTACTS}/{created['id']}", headers=auth)
    assert answered(fetched) == created
    listed = await client.get(CONTACTS, params={"email": "new@example.com"}, headers=auth)
    assert listed.json()["data"] == []

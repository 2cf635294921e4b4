"""custom_field_filters (SPEC 6.7): every operator of every slot type against a real database,
the dates of date-times in the Space's timezone at the days' edges, the folding of case held
to one definition on both databases, and the refusals as the API words them."""

import unicodedata
from datetime import UTC, date, datetime, time, timedelta
from operator import eq, gt, lt
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Text, literal, select, text

from contactbase.contacts.filter_clauses import Folded, fold_case, is_word_character, where
from contactbase.contacts.filters import (
    MAX_DAYS,
    Condition,
    Filters,
    canonical,
    gather_brackets,
)
from contactbase.contacts.models import Contact
from contactbase.db import Database
from contactbase.errors import InvalidInput
from contactbase.validation import invalid_input
from tests.factories import add_contact, make_tenant

Json = dict[str, Any]
TODAY = date(2026, 3, 31)


class Query(BaseModel):
    """The shape the list's query and the export's body give the field."""

    model_config = ConfigDict(extra="forbid")

    custom_field_filters: Filters | None = None


def conditions(sent: Any) -> list[Condition]:
    parsed = Query.model_validate({"custom_field_filters": sent}).custom_field_filters
    assert parsed is not None
    return parsed


def refusal(sent: Any, *, body: bool = False) -> dict[str, list[str]]:
    """The 422's `errors` for these filters, as the API words them."""
    try:
        if body:
            Query.model_validate_json(sent)
        else:
            Query.model_validate({"custom_field_filters": sent})
    except ValidationError as exc:
        return invalid_input(exc.errors(include_url=False), located=False).errors
    raise AssertionError(f"accepted: {sent!r}")


async def people(
    client: httpx.AsyncClient, db: Database, slot: str, values: dict[str, Any]
) -> None:
    """One contact per name (its email's local part), `slot` set to the value (None: unset)."""
    auth = await make_tenant(db)
    for name, value in values.items():
        body: Json = {"emails": [f"{name}@example.com"]}
        if value is not None:
            body["custom_fields"] = {slot: value}
        await add_contact(client, auth, body)


async def matching(
    db: Database, sent: list[Json], timezone: str = "UTC", today: date = TODAY
) -> set[str]:
    """The names of the contacts the conditions select, in the database."""
    clauses = where(conditions(sent), timezone, today)
    async with db.reader() as session:
        rows = await session.execute(select(Contact.email).where(*clauses))
        return {email.split("@")[0] for (email,) in rows}


def condition(slot: str, operator: str, value: Any = None) -> Json:
    sent: Json = {"field": slot, "operator": operator}
    if value is not None:
        sent["value"] = value
    return sent


async def mismatches(
    db: Database, slot: str, cases: list[tuple[str, Any, set[str]]], timezone: str = "UTC"
) -> list[tuple[str, Any, set[str], set[str]]]:
    """The cases whose selection is not the one expected (all of them listed on a failure)."""
    wrong = []
    for operator, value, expected in cases:
        got = await matching(db, [condition(slot, operator, value)], timezone)
        if got != expected:
            wrong.append((operator, value, expected, got))
    return wrong


TEXTS = {
    "upper": "ÉCOLE",
    "lower": "école",
    "sharp": "Straße",
    "caps": "STRASSE",
    "odd": "100% sure_thing",
    "vip": "VIP-customer",
    "vipers": "vipers",
    "cafe": "naïve café au lait",
    "sigma": "ΟΔΟΣ ΚΑΛΟΣ",
    "blank": "",
    "unset": None,
}
SET_TEXTS = {name for name, value in TEXTS.items() if value is not None}
SCHOOL, STREET = {"upper", "lower"}, {"sharp", "caps"}
TEXT_CASES: list[tuple[str, Any, set[str]]] = [
    ("equal_to", "école", SCHOOL),
    ("equal_to", "ÉCOLE", SCHOOL),
    ("equal_to", "Ecole", set()),  # accents are not case
    ("equal_to", "straße", STREET),
    ("equal_to", "STRAẞE", STREET),  # the capital sharp s
    ("equal_to", "Strasse", STREET),
    ("equal_to", "οδος καλος", {"sigma"}),  # final and other sigmas alike
    ("equal_to", "", {"blank"}),
    ("not_equal_to", "école", SET_TEXTS - SCHOOL),  # the unset slot never
    ("not_equal_to", "", SET_TEXTS - {"blank"}),
    ("contains", "", SET_TEXTS),  # every set value, the empty one too
    ("contains", "COL", SCHOOL),
    ("contains", "ss", STREET),
    ("contains", "ΟΣ ΚΑΛ", {"sigma"}),
    ("contains", "%", {"odd"}),  # % and _ are themselves, never wildcards
    ("contains", "_", {"odd"}),
    ("contains", "s_re", set()),
    ("contains", "100%thing", set()),
    ("contains", "0% SURE_T", {"odd"}),
    ("not_contains", "ss", SET_TEXTS - STREET),
    ("not_contains", "%", SET_TEXTS - {"odd"}),
    ("not_contains", "", set()),
    ("starts_with", "éC", SCHOOL),
    ("starts_with", "vip", {"vip", "vipers"}),
    ("starts_with", "100%", {"odd"}),
    ("starts_with", "%", set()),
    ("starts_with", "_", set()),
    ("starts_with", "", SET_TEXTS),
    ("starts_with", "école et", set()),  # longer than the text
    ("ends_with", "OLE", SCHOOL),
    ("ends_with", "_THING", {"odd"}),
    ("ends_with", "STRAẞE", STREET),
    ("ends_with", "%", set()),
    ("ends_with", "_", set()),
    ("ends_with", "", SET_TEXTS),
    ("ends_with", "une école", set()),
    ("contains_word", "vip", {"vip"}),  # the hyphen ends it; "vipers" is another word
    ("contains_word", "CUSTOMER", {"vip"}),
    ("contains_word", "vip-customer", {"vip"}),
    ("contains_word", "viper", set()),
    ("contains_word", "sure", {"odd"}),  # an underscore is neither letter nor digit
    ("contains_word", "100", {"odd"}),
    ("contains_word", "10", set()),
    ("contains_word", "naïve", {"cafe"}),  # at the start
    ("contains_word", "CAFÉ", {"cafe"}),  # inside
    ("contains_word", "lait", {"cafe"}),  # at the end
    ("contains_word", "caf", set()),  # é is a letter
    ("contains_word", "école", SCHOOL),  # the whole text
    ("contains_word", "strasse", STREET),
    ("contains_word", "καλος", {"sigma"}),
    ("contains_word", "vip.customer", set()),  # the value is never a regular expression
    ("contains_word", "v.p", set()),
    ("contains_word", "x|vip", set()),
    ("contains_word", "(vip)", set()),
    ("contains_word", "[", set()),
    ("contains_word", "\\", set()),
    ("any", None, SET_TEXTS),
    ("unknown", None, {"unset"}),
]


async def test_text_operators(client: httpx.AsyncClient, db: Database) -> None:
    await people(client, db, "profile_field_7", TEXTS)
    assert await mismatches(db, "profile_field_7", TEXT_CASES) == []


NUMBERS = {
    "half": 1.5,
    "two": 2,
    "minus": -3,
    "zero": 0,
    "tenth": 0.3,
    "big": 1e15,
    "unset": None,
}
SET_NUMBERS = {name for name, value in NUMBERS.items() if value is not None}
NUMBER_CASES: list[tuple[str, Any, set[str]]] = [
    ("equal_to", 1.5, {"half"}),
    ("equal_to", "1.5", {"half"}),  # the bracket form sends text
    ("equal_to", "+1.50", {"half"}),
    ("equal_to", "15e-1", {"half"}),
    ("equal_to", 2, {"two"}),
    ("equal_to", 2.0, {"two"}),
    ("equal_to", "2", {"two"}),
    ("equal_to", -3, {"minus"}),
    ("equal_to", "-3.0", {"minus"}),
    ("equal_to", 0, {"zero"}),
    ("equal_to", "-0", {"zero"}),
    ("equal_to", 0.3, {"tenth"}),
    ("equal_to", 0.1 + 0.2, set()),  # the stored double, exactly
    ("equal_to", "1e15", {"big"}),
    ("equal_to", 2.5, set()),
    ("not_equal_to", 2, SET_NUMBERS - {"two"}),  # the unset slot never
    ("greater_than", 1.5, {"two", "big"}),
    ("greater_than_or_equal_to", 1.5, {"half", "two", "big"}),
    ("greater_than_or_equal_to", "1.5", {"half", "two", "big"}),
    ("less_than", 0, {"minus"}),
    ("less_than_or_equal_to", 0, {"minus", "zero"}),
    ("less_than_or_equal_to", "-3", {"minus"}),
    ("greater_than", -1e300, SET_NUMBERS),
    ("less_than", -3, set()),
    ("any", None, SET_NUMBERS),
    ("unknown", None, {"unset"}),
]


async def test_number_operators(client: httpx.AsyncClient, db: Database) -> None:
    await people(client, db, "profile_field_19", NUMBERS)
    assert await mismatches(db, "profile_field_19", NUMBER_CASES) == []


DATES = {
    "first": "2026-03-01",
    "second": "2026-03-02",
    "late": "2026-03-01T23:30:00Z",  # 2026-03-02 in Paris, 2026-03-01 in New York
    "early": "2026-03-01T04:30:00Z",  # 2026-03-01 in Paris, 2026-02-28 in New York
    "unset": None,
}
SET_DATES = {name for name, value in DATES.items() if value is not None}
# TODAY is 2026-03-31: 30 days after 2026-03-01.
PARIS_CASES: list[tuple[str, Any, set[str]]] = [
    ("equal_to", "2026-03-01", {"first", "early"}),
    ("equal_to", "2026-03-02", {"second", "late"}),
    ("equal_to", "2026-02-28", set()),
    ("greater_than", "2026-03-01", {"second", "late"}),
    ("greater_than", "2026-02-28", SET_DATES),
    ("less_than", "2026-03-02", {"first", "early"}),
    ("less_than", "2026-03-01", set()),
    ("age_equal_to", 30, {"first", "early"}),
    ("age_equal_to", "29", {"second", "late"}),
    ("age_greater_than", 29, {"first", "early"}),
    ("age_greater_than", 30, set()),
    ("age_less_than", 30, {"second", "late"}),
    ("age_less_than", 31, SET_DATES),
    ("age_less_than", 0, set()),
    ("age_equal_to", MAX_DAYS, set()),  # before the calendar's first day
    ("age_greater_than", MAX_DAYS, set()),
    ("age_less_than", MAX_DAYS, SET_DATES),
    ("any", None, SET_DATES),
    ("unknown", None, {"unset"}),
]
NEW_YORK_CASES: list[tuple[str, Any, set[str]]] = [
    ("equal_to", "2026-03-01", {"first", "late"}),
    ("equal_to", "2026-02-28", {"early"}),
    ("equal_to", "2026-03-02", {"second"}),
    ("greater_than", "2026-02-28", {"first", "second", "late"}),
    ("less_than", "2026-03-01", {"early"}),
    ("age_equal_to", 31, {"early"}),
    ("age_greater_than", 29, {"first", "late", "early"}),
]


async def test_date_operators_read_a_date_time_in_the_spaces_zone(
    client: httpx.AsyncClient, db: Database
) -> None:
    await people(client, db, "profile_field_28", DATES)
    assert await mismatches(db, "profile_field_28", PARIS_CASES, "Europe/Paris") == []
    assert await mismatches(db, "profile_field_28", NEW_YORK_CASES, "America/New_York") == []


def between(start: str, end: str, slot: str = "profile_field_28") -> Json:
    return {"field": slot, "operator": "between", "start": start, "end": end}


async def test_between_includes_both_days(client: httpx.AsyncClient, db: Database) -> None:
    await people(client, db, "profile_field_28", DATES)
    paris = "Europe/Paris"
    assert await matching(db, [between("2026-03-01", "2026-03-01")], paris) == {"first", "early"}
    assert await matching(db, [between("2026-03-02", "2026-03-31")], paris) == {"second", "late"}
    assert await matching(db, [between("2026-02-28", "2026-03-02")], paris) == SET_DATES
    assert await matching(db, [between("2026-03-03", "2026-12-31")], paris) == set()
    new_york = "America/New_York"
    assert await matching(db, [between("2026-02-28", "2026-02-28")], new_york) == {"early"}


# Days on which clocks change: Paris (an hour at 02:00 in March, back at 03:00 in October), New
# York, Santiago (at midnight: in September 00:00 never shows; in April 23:00-24:00 shows twice),
# Lord Howe (half an hour); and the zones farthest from UTC.
ZONES = (
    "Europe/Paris",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Asia/Kathmandu",
)
DAYS = tuple(
    date.fromisoformat(day)
    for day in (
        "2026-01-01",
        "2026-03-08",
        "2026-03-29",
        "2026-04-05",
        "2026-09-06",
        "2026-10-04",
        "2026-10-25",
        "2026-11-01",
    )
)
STORED = "%Y-%m-%dT%H:%M:%SZ"
LATER = date(2026, 12, 31)


def local_day(stored: str, zone: ZoneInfo) -> date:
    """The reference: the day of a stored date, or of a stored date-time in `zone`."""
    if len(stored) == 10:
        return date.fromisoformat(stored)
    return datetime.strptime(stored, STORED).replace(tzinfo=UTC).astimezone(zone).date()


def edges() -> dict[str, str]:
    """The instants just before and at the start of each day in each zone, each day as a date
    too."""
    stored = {f"d{day:%m%d}": day.isoformat() for day in DAYS}
    for number, name in enumerate(ZONES):
        zone = ZoneInfo(name)
        for day in DAYS:
            start = datetime.combine(day, time(), zone).astimezone(UTC)
            for label, moment in (("b", start - timedelta(seconds=1)), ("a", start)):
                stored[f"z{number}{label}{day:%m%d}"] = moment.strftime(STORED)
    return stored


async def test_dates_at_the_edges_of_days_follow_the_zone(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Every operator, in zones with clock changes, against instants one second apart across
    each day's start: the SQL's choice is the reference's (the day of the instant in the zone)."""
    stored = edges()
    await people(client, db, "profile_field_30", stored)
    checks = {"equal_to": eq, "greater_than": gt, "less_than": lt}
    wrong = []
    for name in ZONES:
        zone = ZoneInfo(name)
        days = {label: local_day(value, zone) for label, value in stored.items()}
        for bound in DAYS:
            asked: list[tuple[Json, set[str]]] = [
                (
                    condition("profile_field_30", operator, bound.isoformat()),
                    {label for label, day in days.items() if check(day, bound)},
                )
                for operator, check in checks.items()
            ]
            # The ages as of a today after every day: each day is some whole days ago.
            age = (LATER - bound).days
            asked += [
                (
                    condition("profile_field_30", "age_equal_to", age),
                    {label for label, day in days.items() if day == bound},
                ),
                (
                    condition("profile_field_30", "age_greater_than", age),
                    {label for label, day in days.items() if day < bound},
                ),
                (
                    condition("profile_field_30", "age_less_than", age),
                    {label for label, day in days.items() if day > bound},
                ),
                (
                    between(
                        bound.isoformat(),
                        (bound + timedelta(days=1)).isoformat(),
                        "profile_field_30",
                    ),
                    {label for label, day in days.items() if 0 <= (day - bound).days <= 1},
                ),
            ]
            for sent, expected in asked:
                got = await matching(db, [sent], name, LATER)
                if got != expected:
                    wrong.append((name, sent, sorted(expected ^ got)))
    assert wrong == []


async def test_a_date_time_on_a_day_when_clocks_change(
    client: httpx.AsyncClient, db: Database
) -> None:
    """Paris, 2026-03-29 is 23 hours long (from 23:00 UTC the day before to 22:00 UTC);
    2026-10-25 25 hours (from 22:00 UTC the day before to 23:00 UTC)."""
    await people(
        client,
        db,
        "profile_field_26",
        {
            "before": "2026-03-28T22:59:59Z",
            "first": "2026-03-28T23:00:00Z",
            "last": "2026-03-29T21:59:59Z",
            "after": "2026-03-29T22:00:00Z",
            "autumn_first": "2026-10-24T22:00:00Z",
            "autumn_last": "2026-10-25T22:59:59Z",
            "autumn_after": "2026-10-25T23:00:00Z",
        },
    )

    async def on(day: str) -> set[str]:
        return await matching(db, [condition("profile_field_26", "equal_to", day)], "Europe/Paris")

    assert await on("2026-03-28") == {"before"}
    assert await on("2026-03-29") == {"first", "last"}
    assert await on("2026-03-30") == {"after"}
    assert await on("2026-10-25") == {"autumn_first", "autumn_last"}
    assert await on("2026-10-26") == {"autumn_after"}


async def asked_on(db: Database, operator: str, day: str, zone: str) -> set[str]:
    return await matching(db, [condition("profile_field_29", operator, day)], zone)


EAST, WEST = "Etc/GMT-14", "Etc/GMT+12"  # +14:00 and -12:00 (POSIX signs)


async def test_dates_at_the_end_of_the_calendar(client: httpx.AsyncClient, db: Database) -> None:
    """Days whose start in the zone lies after the year 9999 select what they should, and
    nothing fails."""
    await people(
        client,
        db,
        "profile_field_29",
        {
            "last_day": "9999-12-31",
            "last_morning": "9999-12-31T10:00:00Z",  # 10000-01-01 at +14, 9999-12-30 at -12
            "last_evening": "9999-12-31T20:00:00Z",  # 10000-01-01 at +14, 9999-12-31 at -12
        },
    )
    assert await asked_on(db, "equal_to", "9999-12-31", EAST) == {"last_day"}
    assert await asked_on(db, "greater_than", "9999-12-30", EAST) == {
        "last_day",
        "last_morning",
        "last_evening",
    }
    assert await asked_on(db, "greater_than", "9999-12-31", EAST) == {
        "last_morning",
        "last_evening",
    }
    assert await asked_on(db, "equal_to", "9999-12-30", WEST) == {"last_morning"}
    assert await asked_on(db, "equal_to", "9999-12-31", WEST) == {"last_day", "last_evening"}
    assert await asked_on(db, "greater_than", "9999-12-31", WEST) == set()
    assert await asked_on(db, "age_less_than", str(MAX_DAYS), EAST) == {
        "last_day",
        "last_morning",
        "last_evening",
    }


async def test_dates_at_the_start_of_the_calendar(client: httpx.AsyncClient, db: Database) -> None:
    await people(client, db, "profile_field_29", {"first_day": "0001-01-01"})
    assert await asked_on(db, "equal_to", "0001-01-01", EAST) == {"first_day"}
    assert await asked_on(db, "less_than", "0001-01-01", WEST) == set()
    assert await asked_on(db, "age_greater_than", str(MAX_DAYS), EAST) == set()
    assert await asked_on(db, "age_equal_to", str(MAX_DAYS), EAST) == set()


async def test_date_times_at_the_start_of_the_calendar(
    client: httpx.AsyncClient, db: Database
) -> None:
    await people(
        client,
        db,
        "profile_field_29",
        {
            "first_morning": "0001-01-01T05:00:00Z",  # 0001-01-01 at +14, 0000-12-31 at -12
            "first_noon": "0001-01-01T12:00:00Z",  # 0001-01-02 at +14, 0001-01-01 at -12
        },
    )
    assert await asked_on(db, "equal_to", "0001-01-01", EAST) == {"first_morning"}
    assert await asked_on(db, "equal_to", "0001-01-02", EAST) == {"first_noon"}
    assert await asked_on(db, "equal_to", "0001-01-01", WEST) == {"first_noon"}
    assert await asked_on(db, "less_than", "0001-01-01", WEST) == {"first_morning"}


async def test_conditions_are_all_required(client: httpx.AsyncClient, db: Database) -> None:
    auth = await make_tenant(db)
    for name, slots in {
        "all": {
            "profile_field_1": "Gold VIP",
            "profile_field_16": 5,
            "profile_field_26": "2026-03-01",
        },
        "text_only": {"profile_field_1": "Gold VIP", "profile_field_16": 4},
        "number_only": {"profile_field_16": 5, "profile_field_26": "2026-03-01"},
        "none": {},
    }.items():
        await add_contact(client, auth, {"emails": [f"{name}@example.com"], "custom_fields": slots})
    gold = condition("profile_field_1", "contains_word", "vip")
    five = condition("profile_field_16", "greater_than_or_equal_to", "5")
    march = condition("profile_field_26", "equal_to", "2026-03-01")
    assert await matching(db, [gold]) == {"all", "text_only"}
    assert await matching(db, [gold, five]) == {"all"}
    assert await matching(db, [five, march]) == {"all", "number_only"}
    assert await matching(db, [gold, five, march]) == {"all"}
    assert await matching(db, [gold, condition("profile_field_1", "unknown")]) == set()
    below_six = condition("profile_field_16", "less_than", 6)
    above_four = condition("profile_field_16", "greater_than", 4)
    assert await matching(db, [below_six, above_four]) == {"all", "number_only"}
    assert await matching(db, []) == {"all", "text_only", "number_only", "none"}


async def test_folding_is_one_definition_on_both_databases(db: Database) -> None:
    """The database folds every character (Python's Unicode assigns) as fold_case does: ICU on
    PostgreSQL, the registered function on SQLite."""
    characters = [
        chr(point)
        for point in range(1, 0x110000)
        if chr(point) != "\n" and unicodedata.category(chr(point)) not in ("Cn", "Cs")
    ]
    async with db.reader() as session:
        folded = await session.scalar(select(Folded(literal("\n".join(characters), Text))))
    assert folded is not None
    wrong = [
        (hex(ord(character)), got)
        for character, got in zip(characters, folded.split("\n"), strict=True)
        if got != fold_case(character)
    ]
    assert wrong == []


def test_folding_equals_what_casefold_equals_and_joins_dotless_i() -> None:
    """Two characters fold alike exactly when str.casefold says they are equal, but for the
    dotless i, which folds as i."""
    classes: dict[str, set[str]] = {}
    for point in range(0x110000):
        if 0xD800 <= point < 0xE000:
            continue
        classes.setdefault(fold_case(chr(point)) or "", set()).add(chr(point).casefold())
    joined = {folded: casefolds for folded, casefolds in classes.items() if len(casefolds) > 1}
    assert joined == {"i": {"i", "\u0131"}}
    assert fold_case("Straße") == fold_case("STRASSE") == fold_case("STRAẞE") == "strasse"


async def test_word_characters_are_postgresqls(db: Database, is_postgres: bool) -> None:
    """contains_word's letters and digits on SQLite (Unicode's L* and Nd) are those of
    PostgreSQL's [[:alnum:]] under ICU, for every character Python's Unicode assigns."""
    if not is_postgres:
        pytest.skip("compares SQLite's definition with PostgreSQL's")
    characters = [
        chr(point)
        for point in range(1, 0x110000)
        if unicodedata.category(chr(point)) not in ("Cn", "Cs")
    ]
    query = text(
        "SELECT regexp_replace(CAST(:all AS text) COLLATE \"und-x-icu\", '[[:alnum:]]', '', 'g')"
    )
    async with db.reader() as session:
        rest = await session.scalar(query, {"all": "".join(characters)})
    assert rest == "".join(c for c in characters if not is_word_character(c))


# Refusals.

VALID = [condition("profile_field_1", "any")] * 3
TEXT_OPERATORS = (
    "equal_to, not_equal_to, contains, not_contains, starts_with, ends_with, contains_word, "
    "any or unknown"
)
NUMBER_OPERATORS = (
    "equal_to, not_equal_to, greater_than, greater_than_or_equal_to, less_than, "
    "less_than_or_equal_to, any or unknown"
)
DATE_OPERATORS = (
    "equal_to, between, greater_than, less_than, age_greater_than, age_equal_to, "
    "age_less_than, any or unknown"
)


@pytest.mark.parametrize(
    ("sent", "key", "message"),
    [
        (
            condition("profile_field_16", "contains", "1"),
            "operator",
            f'must be one of {NUMBER_OPERATORS} for a number slot ("contains").',
        ),
        (
            condition("profile_field_26", "starts_with", "2026"),
            "operator",
            f'must be one of {DATE_OPERATORS} for a date slot ("starts_with").',
        ),
        (
            condition("profile_field_3", "greater_than", "a"),
            "operator",
            f'must be one of {TEXT_OPERATORS} for a text slot ("greater_than").',
        ),
        (
            condition("profile_field_31", "equal_to", "a"),
            "field",
            'must be one of profile_field_1 to profile_field_30 ("profile_field_31").',
        ),
        ({"field": 1, "operator": "any"}, "field", "must be a string (1)."),
        (condition("profile_field_16", "equal_to", "one"), "value", 'must be a number ("one").'),
        (condition("profile_field_16", "equal_to", "1,5"), "value", 'must be a number ("1,5").'),
        (condition("profile_field_16", "equal_to", True), "value", "must be a number (true)."),
        (
            condition("profile_field_16", "equal_to", "1e999"),
            "value",
            'must be a finite number ("1e999").',
        ),
        (condition("profile_field_2", "equal_to", 5), "value", "must be a string (5)."),
        (condition("profile_field_2", "contains_word", ""), "value", 'must not be empty ("").'),
        (
            condition("profile_field_2", "contains", "a\x00b"),
            "value",
            'must not contain control characters ("a\\u0000b").',
        ),
        (
            condition("profile_field_2", "equal_to", "x" * 10_241),
            "value",
            f'must not be greater than 10240 characters ("{"x" * 60}…").',
        ),
        (
            condition("profile_field_26", "equal_to", "2026-3-1"),
            "value",
            'must be a date: YYYY-MM-DD ("2026-3-1").',
        ),
        (
            condition("profile_field_26", "equal_to", "2026-03-01T00:00:00Z"),
            "value",
            'must be a date: YYYY-MM-DD ("2026-03-01T00:00:00Z").',
        ),
        (
            condition("profile_field_26", "equal_to", "2026-02-30"),
            "value",
            'must be a date: YYYY-MM-DD ("2026-02-30").',
        ),
        (
            condition("profile_field_26", "age_equal_to", -1),
            "value",
            f"must be a whole number of days, 0 to {MAX_DAYS} (-1).",
        ),
        (
            condition("profile_field_26", "age_less_than", 1.5),
            "value",
            f"must be a whole number of days, 0 to {MAX_DAYS} (1.5).",
        ),
        (
            condition("profile_field_26", "age_less_than", "1.0"),
            "value",
            f'must be a whole number of days, 0 to {MAX_DAYS} ("1.0").',
        ),
        (
            condition("profile_field_1", "equal_to"),
            "value",
            "is required with the equal_to operator.",
        ),
        (
            {**condition("profile_field_16", "less_than"), "value": None},
            "value",
            "is required with the less_than operator.",
        ),
        (
            condition("profile_field_1", "any", "x"),
            "value",
            'must be left out with the any operator ("x").',
        ),
        (
            condition("profile_field_1", "unknown", 0),
            "value",
            "must be left out with the unknown operator (0).",
        ),
        (
            {**between("2026-01-01", "2026-01-31"), "value": "2026-01-01"},
            "value",
            'must be left out with the between operator ("2026-01-01").',
        ),
        (
            {"field": "profile_field_26", "operator": "between", "start": "2026-01-01"},
            "end",
            "is required with the between operator.",
        ),
        (
            between("2026-01-31", "2026-01-01"),
            "end",
            'must be a date after or equal to start ("2026-01-01").',
        ),
        (between("2026-01-01", "soon"), "end", 'must be a date: YYYY-MM-DD ("soon").'),
        (
            {**condition("profile_field_26", "equal_to", "2026-01-01"), "start": "2026-01-01"},
            "start",
            'must be left out with the equal_to operator ("2026-01-01").',
        ),
        ({**condition("profile_field_1", "any"), "values": "x"}, "values", "is not allowed."),
    ],
)
def test_a_wrong_condition_is_named_by_its_place(sent: Json, key: str, message: str) -> None:
    path = f"custom_field_filters.3.{key}"
    assert refusal([*VALID, sent]) == {path: [f"The {path} field {message}"]}


def test_an_unknown_slot_still_checks_the_operator() -> None:
    every = (
        "equal_to, not_equal_to, contains, not_contains, starts_with, ends_with, contains_word, "
        "any, unknown, greater_than, greater_than_or_equal_to, less_than, less_than_or_equal_to, "
        "between, age_greater_than, age_equal_to or age_less_than"
    )
    assert refusal([{"field": "name", "operator": "like"}]) == {
        "custom_field_filters.0.field": [
            "The custom_field_filters.0.field field must be one of profile_field_1 to "
            'profile_field_30 ("name").'
        ],
        "custom_field_filters.0.operator": [
            f'The custom_field_filters.0.operator field must be one of {every} ("like").'
        ],
    }


def test_no_value_is_needed_where_none_is_used() -> None:
    """any, unknown and between take a value left out, null or empty: the bracket form can
    only send an empty one."""
    for value in (None, ""):
        for operator in ("any", "unknown"):
            sent = {"field": "profile_field_20", "operator": operator, "value": value}
            assert conditions([sent])[0].value is None
        sent = {**between("2026-01-01", "2026-01-01"), "value": value}
        assert conditions([sent])[0].value is None


def test_at_most_ten_conditions() -> None:
    assert len(conditions([condition("profile_field_1", "any")] * 10)) == 10
    assert refusal([condition("profile_field_1", "any")] * 11) == {
        "custom_field_filters": [
            "The custom_field_filters field must not have more than 10 items (11 sent)."
        ]
    }


def test_the_query_string_sends_json() -> None:
    sent = '[{"field": "profile_field_16", "operator": "equal_to", "value": 1.5}]'
    assert conditions(sent) == [Condition(field="profile_field_16", operator="equal_to", value=1.5)]
    assert refusal('[{"field": "profile_field_16"') == {
        "custom_field_filters": [
            "The custom_field_filters field must be valid JSON, an array of conditions "
            "(EOF while parsing an object at line 1 column 29)."
        ]
    }
    assert refusal('{"field": "profile_field_16"}') == {
        "custom_field_filters": [
            'The custom_field_filters field must be an array ({"field": "profile_field_16"}).'
        ]
    }
    assert refusal("[" * 100_000)["custom_field_filters"][0].startswith(
        "The custom_field_filters field must be valid JSON"
    )


def test_a_json_body_sends_an_array_not_text() -> None:
    body = '{"custom_field_filters": [{"field": "profile_field_1", "operator": "any"}]}'
    assert Query.model_validate_json(body).custom_field_filters == [
        Condition(field="profile_field_1", operator="any")
    ]
    assert refusal('{"custom_field_filters": "[]"}', body=True) == {
        "custom_field_filters": ['The custom_field_filters field must be an array ("[]").']
    }


# What PHP's http_build_query makes of Cometly's documented example, and the same as JSON.
PHP_QUERY = (
    "per_page=50"
    "&custom_field_filters%5B0%5D%5Bfield%5D=profile_field_16"
    "&custom_field_filters%5B0%5D%5Boperator%5D=greater_than"
    "&custom_field_filters%5B0%5D%5Bvalue%5D=1.5"
    "&custom_field_filters%5B1%5D%5Bfield%5D=profile_field_26"
    "&custom_field_filters%5B1%5D%5Boperator%5D=between"
    "&custom_field_filters%5B1%5D%5Bstart%5D=2026-01-01"
    "&custom_field_filters%5B1%5D%5Bend%5D=2026-01-31"
    "&custom_field_filters%5B2%5D%5Bfield%5D=profile_field_27"
    "&custom_field_filters%5B2%5D%5Boperator%5D=age_less_than"
    "&custom_field_filters%5B2%5D%5Bvalue%5D=30"
    "&custom_field_filters%5B3%5D%5Bfield%5D=profile_field_2"
    "&custom_field_filters%5B3%5D%5Boperator%5D=unknown"
    "&custom_field_filters%5B3%5D%5Bvalue%5D="
)
AS_JSON = [
    {"field": "profile_field_16", "operator": "greater_than", "value": 1.5},
    {
        "field": "profile_field_26",
        "operator": "between",
        "start": "2026-01-01",
        "end": "2026-01-31",
    },
    {"field": "profile_field_27", "operator": "age_less_than", "value": 30},
    {"field": "profile_field_2", "operator": "unknown"},
]


def test_the_bracket_form_means_what_the_json_does() -> None:
    gathered = gather_brackets(dict(parse_qsl(PHP_QUERY, keep_blank_values=True)))
    assert gathered["per_page"] == "50"
    assert gathered["custom_field_filters"][0] == {
        "field": "profile_field_16",
        "operator": "greater_than",
        "value": "1.5",
    }
    assert conditions(gathered["custom_field_filters"]) == conditions(AS_JSON)
    assert gather_brackets({"per_page": "5"}) == {"per_page": "5"}


def test_bracket_indexes_give_the_order_and_gaps_close() -> None:
    gathered = gather_brackets(
        {
            "custom_field_filters[10][field]": "profile_field_3",
            "custom_field_filters[2][field]": "profile_field_2",
            "custom_field_filters[10][operator]": "any",
            "custom_field_filters[2][operator]": "unknown",
        }
    )
    assert gathered == {
        "custom_field_filters": [
            {"field": "profile_field_2", "operator": "unknown"},
            {"field": "profile_field_3", "operator": "any"},
        ]
    }


@pytest.mark.parametrize(
    "name",
    [
        "custom_field_filters[a][field]",
        "custom_field_filters[-1][field]",
        "custom_field_filters[01][field]",
        "custom_field_filters[0]",
        "custom_field_filters[]",
        "custom_field_filters[0][values]",
        "custom_field_filters[0][value][]",
        "custom_field_filters[1234567890][field]",
    ],
)
def test_a_malformed_bracket_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        gather_brackets({"custom_field_filters[0][field]": "profile_field_1", name: "x"})
    assert refused.value.errors == {
        "custom_field_filters": [
            "The custom_field_filters field must be sent as JSON or as "
            "custom_field_filters[N][field], [operator], [value], [start] and [end], N a whole "
            f'number ("{name}").'
        ]
    }


def test_both_forms_at_once_are_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        gather_brackets(
            {"custom_field_filters": "[]", "custom_field_filters[0][field]": "profile_field_1"}
        )
    assert refused.value.errors == {
        "custom_field_filters": [
            "The custom_field_filters field must be sent either as JSON or in brackets, not both."
        ]
    }


def test_canonical_text_is_the_same_for_the_same_filters() -> None:
    sent = conditions(AS_JSON)
    assert canonical(sent) == canonical(conditions(AS_JSON[::-1]))
    gathered = gather_brackets(dict(parse_qsl(PHP_QUERY, keep_blank_values=True)))
    assert canonical(conditions(gathered["custom_field_filters"])) == canonical(sent)
    other = [*AS_JSON[:3], {"field": "profile_field_2", "operator": "any"}]
    assert canonical(conditions(other)) != canonical(sent)
    assert canonical(conditions([condition("profile_field_16", "equal_to", "-0")])) == canonical(
        conditions([condition("profile_field_16", "equal_to", 0)])
    )
    assert canonical([]) == "[]"
    assert canonical(sent).isascii()

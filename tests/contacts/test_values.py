"""The rules for one value (contactbase.contacts.values) and the service's dedupe: examples, and
properties over large input spaces (emails, phones, unicode text)."""

import string
from collections.abc import Callable

import pytest
from email_validator import validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from contactbase.contacts.values import (
    PLAIN_EMAIL,
    clean_email,
    clean_phone,
    clean_text,
    is_plain_email,
    normalise_email,
    normalise_phone,
    normalise_text,
)
from contactbase.contacts.writes import dedupe
from contactbase.validation import ValueRejected

DIGITS = "0123456789"
SEPARATORS = " ().-"
# What str.strip() removes: the rules trim before they judge.
PADDING = st.text(alphabet=" \t\n\r\u00a0\u2003\u3000", max_size=3)
WHITESPACE = [chr(code) for code in range(0x3001) if chr(code).isspace()]
# Printable: anything but control characters (Cc) and lone surrogates (Cs).
PRINTABLE = st.characters(exclude_categories=("Cc", "Cs"))
CONTROL = st.characters(categories=["Cc"])
EMAIL_254 = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"


def rejection(rule: Callable[[str], str], raw: str) -> ValueRejected:
    """The ValueRejected that `rule` raises for `raw`."""
    with pytest.raises(ValueRejected) as caught:
        rule(raw)
    return caught.value


@st.composite
def phones(draw: st.DrawFn, min_digits: int = 4, max_digits: int = 20) -> str:
    """A phone from the grammar: optional leading +, digits and separators, at most 32 long."""
    characters = draw(st.lists(st.sampled_from(DIGITS), min_size=min_digits, max_size=max_digits))
    plus = draw(st.booleans())
    room = max(0, 32 - len(characters) - plus)
    for separator in draw(st.lists(st.sampled_from(SEPARATORS), max_size=room)):
        characters.insert(draw(st.integers(0, len(characters))), separator)
    return ("+" if plus else "") + "".join(characters)


# normalise_email


def test_normalise_email_trims_and_lower_cases() -> None:
    assert normalise_email(" \tJohn.Doe@Example.COM\n") == "john.doe@example.com"
    assert normalise_email("JOSÉ@Exämple.de") == "josé@exämple.de"


@given(st.text())
def test_normalise_email_is_idempotent(text: str) -> None:
    assert normalise_email(normalise_email(text)) == normalise_email(text)


@given(st.emails(), PADDING, PADDING)
def test_normalise_email_ignores_surrounding_whitespace(email: str, left: str, right: str) -> None:
    assert normalise_email(left + email + right) == normalise_email(email) == email.lower()


@given(st.text(alphabet=string.ascii_letters + string.digits + "@.+-_ "))
def test_normalise_email_ignores_ascii_case(text: str) -> None:
    assert normalise_email(text.upper()) == normalise_email(text.swapcase())
    assert normalise_email(text.upper()) == normalise_email(text)


@given(st.emails())
def test_case_variants_of_an_email_share_a_normal_form(email: str) -> None:
    assert normalise_email(email.upper()) == normalise_email(email.swapcase())


# clean_email


@pytest.mark.parametrize(
    "email",
    [
        "John@Example.COM",  # not lower-cased: stored as sent
        "用户@例子.广告",
        "José.Müller@exämple.de",
        "Jose\u0301@example.com",  # decomposed: kept, not NFC-normalised
        "first.last+tag@sub.example.co.uk",
        EMAIL_254,
    ],
)
def test_clean_email_keeps_the_value_as_sent(email: str) -> None:
    assert clean_email(f" {email}\t") == email


@given(st.emails(), PADDING, PADDING)
def test_clean_email_keeps_the_trimmed_value(email: str, left: str, right: str) -> None:
    """Any valid address, padded with whitespace, comes back trimmed and otherwise untouched."""
    assert clean_email(left + email + right) == email


@pytest.mark.parametrize(
    ("raw", "kind", "context"),
    [
        ("", "blank", {}),
        (" \u3000\t", "blank", {}),
        ("a" + EMAIL_254, "too_many_characters", {"max": 254}),
        ("not-an-email", "invalid_email", {}),
        ("a@b", "invalid_email", {}),
        ("a\u0000b@example.com", "invalid_email", {}),
        ("John <john@example.com>", "invalid_email", {}),
    ],
)
def test_clean_email_rejects(raw: str, kind: str, context: dict[str, object]) -> None:
    refused = rejection(clean_email, raw)
    assert (refused.kind, refused.context) == (kind, context)


@given(st.text().filter(lambda text: "@" not in text))
def test_clean_email_rejects_text_without_at_sign(text: str) -> None:
    assert rejection(clean_email, text).kind in {"blank", "invalid_email", "too_many_characters"}


@given(st.from_regex(PLAIN_EMAIL, fullmatch=True) | st.emails() | st.text(max_size=80))
@settings(max_examples=300)
def test_every_plain_email_is_one_email_validator_accepts(email: str) -> None:
    """The fast path may only accept what email-validator accepts (it judges everything else)."""
    if len(email) <= 254 and is_plain_email(email):
        validate_email(email, check_deliverability=False)


@pytest.mark.parametrize(
    "email",
    [
        "john@example.com",
        "first.last+tag@sub.example.co.uk",
        "o'brien@example.ie",
        "JOHN@EXAMPLE.COM",
        "a@b-c.de",
        EMAIL_254,
    ],
)
def test_everyday_emails_take_the_fast_path(email: str) -> None:
    assert is_plain_email(email)


@pytest.mark.parametrize(
    "email",
    [
        "a@localhost",
        "a@host.test",
        "a@b.onion",
        "a..b@example.com",
        "a.@example.com",
        "a@-example.com",
        "a@example-.com",
        "a@ex--ample.com",
        "a@example.c0m",
        "用户@例子.广告",
        "a" * 65 + "@example.com",
        "a@" + "b" * 64 + ".com",
    ],
)
def test_other_emails_are_left_to_email_validator(email: str) -> None:
    assert not is_plain_email(email)


# normalise_phone


def test_normalise_phone_keeps_the_digits() -> None:
    assert normalise_phone("+1 (234) 567-890") == "1234567890"
    assert normalise_phone("+0987654321") == "0987654321"
    assert normalise_phone("\u0661\u0662\u0663\u0664") == ""  # Arabic-Indic digits are not 0-9


@given(st.text())
def test_normalise_phone_returns_only_ascii_digits_in_order(text: str) -> None:
    normalised = normalise_phone(text)
    assert normalised == "".join(char for char in text if char in DIGITS)
    assert set(normalised) <= set(DIGITS)


@given(st.text())
def test_normalise_phone_is_idempotent(text: str) -> None:
    assert normalise_phone(normalise_phone(text)) == normalise_phone(text)


# clean_phone


@pytest.mark.parametrize(
    "phone",
    ["+1234567890", "+0987654321", "1234", "1" * 20, "(555) 123-4567", "+44 20.7946.0958"],
)
def test_clean_phone_accepts_examples(phone: str) -> None:
    assert clean_phone(f" {phone} ") == phone


@given(phones(), PADDING, PADDING)
def test_clean_phone_accepts_the_grammar(phone: str, left: str, right: str) -> None:
    """4-20 digits, an optional leading +, separators, at most 32 characters: kept trimmed."""
    assert clean_phone(left + phone + right) == phone.strip()


@given(phones(), st.characters().filter(lambda char: char not in DIGITS + SEPARATORS), st.data())
def test_clean_phone_rejects_any_other_character(
    phone: str, intruder: str, data: st.DataObject
) -> None:
    """An intruder inside a valid phone (not at its ends, where trimming could remove it)."""
    trimmed = phone.strip()
    position = data.draw(st.integers(1, len(trimmed) - 1))
    raw = trimmed[:position] + intruder + trimmed[position:]
    expected = "too_many_characters" if len(raw) > 32 else "invalid_phone"
    assert rejection(clean_phone, raw).kind == expected


@given(st.one_of(phones(min_digits=0, max_digits=3), phones(min_digits=21, max_digits=32)))
def test_clean_phone_rejects_too_few_or_too_many_digits(phone: str) -> None:
    """Too few digits (blank when only spaces), or too many (too long past 32 characters)."""
    trimmed = phone.strip()
    if not trimmed:
        expected = "blank"
    elif len(trimmed) > 32:
        expected = "too_many_characters"
    else:
        expected = "invalid_phone"
    assert rejection(clean_phone, phone).kind == expected


@pytest.mark.parametrize(
    ("raw", "kind", "context"),
    [
        ("", "blank", {}),
        ("  ", "blank", {}),
        ("123", "invalid_phone", {}),
        ("1" * 21, "invalid_phone", {}),
        ("++1234", "invalid_phone", {}),
        ("123+4567", "invalid_phone", {}),
        ("12a4", "invalid_phone", {}),
        ("(((())))", "invalid_phone", {}),
        ("1-2-3-4-5-6-7-8-9-0-1-2-3-4-5-6-7", "too_many_characters", {"max": 32}),
    ],
)
def test_clean_phone_rejects(raw: str, kind: str, context: dict[str, object]) -> None:
    refused = rejection(clean_phone, raw)
    assert (refused.kind, refused.context) == (kind, context)


# clean_text


@given(st.text(PRINTABLE, min_size=1, max_size=255), PADDING, PADDING)
def test_clean_text_accepts_printable_unicode_trimmed(text: str, left: str, right: str) -> None:
    trimmed = text.strip()
    if trimmed:
        assert clean_text(left + text + right) == trimmed == normalise_text(text)
    else:
        assert rejection(clean_text, left + text + right).kind == "blank"


@given(st.text(st.sampled_from(WHITESPACE)))
def test_clean_text_rejects_blank(text: str) -> None:
    assert rejection(clean_text, text).kind == "blank"


@given(st.text(PRINTABLE.filter(lambda char: not char.isspace()), min_size=256, max_size=400))
def test_clean_text_rejects_over_255_characters(text: str) -> None:
    refused = rejection(clean_text, text)
    assert (refused.kind, refused.context) == ("too_many_characters", {"max": 255})


@given(st.text(PRINTABLE, max_size=100), CONTROL, st.text(PRINTABLE, max_size=100))
def test_clean_text_rejects_control_characters(before: str, control: str, after: str) -> None:
    assert rejection(clean_text, f"x{before}{control}{after}x").kind == "control_characters"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  José Müller ", "José Müller"),
        ("\u00a0東京都\u3000", "東京都"),
        ("\U0001f600", "\U0001f600"),
        ("x" * 255, "x" * 255),
        ("a\u200bb", "a\u200bb"),  # a format character, not a control character
    ],
)
def test_clean_text_examples(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    "raw", ["a\u0000b", "a\u0007b", "a\u007fb", "a\u0085b", "a\tb", "a\ud800b"]
)
def test_clean_text_rejects_controls_and_surrogates(raw: str) -> None:
    assert rejection(clean_text, raw).kind == "control_characters"


# dedupe


def test_dedupe_examples() -> None:
    assert dedupe(["A@x.com", "a@X.COM", "b@x.com"], normalise_email) == [
        ("A@x.com", "a@x.com"),
        ("b@x.com", "b@x.com"),
    ]
    assert dedupe(["+1 234", "1234", "(12) 34 5"], normalise_phone) == [
        ("+1 234", "1234"),
        ("(12) 34 5", "12345"),
    ]
    assert dedupe(["John", "john", "John"], normalise_text) == [("John", "John"), ("john", "john")]
    assert dedupe([], normalise_text) == []


@given(
    st.lists(st.text(alphabet="aAbB 1-", max_size=4), max_size=20),
    st.sampled_from([normalise_email, normalise_phone, normalise_text]),
)
def test_dedupe_keeps_the_first_of_each_normal_form_in_order(
    values: list[str], normalise: Callable[[str], str]
) -> None:
    kept = dedupe(values, normalise)
    forms = [normalise(value) for value in values]
    first_index = {form: forms.index(form) for form in forms}
    # One entry per normal form, each the first value that has it, in the order sent.
    assert [form for _, form in kept] == list(dict.fromkeys(forms))
    assert [value for value, _ in kept] == [values[first_index[form]] for _, form in kept]
    assert all(normalise(value) == form for value, form in kept)


def test_control_characters_are_the_categories_cc_and_cs() -> None:
    """has_control_characters' ranges are exactly Unicode's categories Cc and Cs."""
    import sys
    import unicodedata

    from contactbase.validation import has_control_characters

    for code in range(sys.maxunicode + 1):
        char = chr(code)
        assert has_control_characters(char) == (unicodedata.category(char) in ("Cc", "Cs"))

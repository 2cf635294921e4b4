"""The rules for a single value: what is valid, and the normal form it is compared by."""

import re

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from contactbase.validation import ValueRejected, has_control_characters

MAX_EMAIL_LENGTH = 254
MAX_PHONE_LENGTH = 32
MAX_TEXT_LENGTH = 255
PHONE_SHAPE = re.compile(r"\+?[0-9 ().\-]+")
NON_DIGITS = re.compile(r"[^0-9]")
# The everyday shape of an address, which email-validator always accepts (tests hold this):
# a dot-atom local part of at most 64 ASCII characters, and a domain of letter-digit labels
# joined by single hyphens, under an alphabetic top-level label. email-validator judges the
# rest, at a cost per address that is a large share of a create's CPU (docs/performance.md).
PLAIN_EMAIL = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,64}(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9]{1,63}(?:-[A-Za-z0-9]{1,62})*\.)+[A-Za-z]{2,63})"
)
SPECIAL_USE_SUFFIXES = tuple(
    suffix for name in SPECIAL_USE_DOMAIN_NAMES for suffix in (f".{name}", f"@{name}")
)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def normalise_phone(phone: str) -> str:
    return NON_DIGITS.sub("", phone)


def normalise_text(text: str) -> str:
    return text.strip()


def clean_email(raw: str) -> str:
    """The email as stored: trimmed, and valid as email-validator judges it offline."""
    email = raw.strip()
    if not email:
        raise ValueRejected("blank")
    if len(email) > MAX_EMAIL_LENGTH:
        raise ValueRejected("too_many_characters", max=MAX_EMAIL_LENGTH)
    if is_plain_email(email):
        return email
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        raise ValueRejected("invalid_email") from None
    return email


def is_plain_email(email: str) -> bool:
    """True for an address of the everyday shape (PLAIN_EMAIL) that email-validator accepts."""
    match = PLAIN_EMAIL.fullmatch(email)
    if match is None or len(match["local"]) > 64:
        return False
    domain = match["domain"]
    labels_fit = all(len(label) <= 63 for label in domain.split("."))
    return labels_fit and not ("@" + domain.lower()).endswith(SPECIAL_USE_SUFFIXES)


def clean_phone(raw: str) -> str:
    """The phone as stored: trimmed text of 4-20 digits with common separators."""
    phone = raw.strip()
    if not phone:
        raise ValueRejected("blank")
    if len(phone) > MAX_PHONE_LENGTH:
        raise ValueRejected("too_many_characters", max=MAX_PHONE_LENGTH)
    if not PHONE_SHAPE.fullmatch(phone) or not 4 <= len(normalise_phone(phone)) <= 20:
        raise ValueRejected("invalid_phone")
    return phone


def clean_text(raw: str) -> str:
    """A name or location as stored: trimmed, non-empty, printable, at most 255 characters."""
    text = raw.strip()
    if not text:
        raise ValueRejected("blank")
    if len(text) > MAX_TEXT_LENGTH:
        raise ValueRejected("too_many_characters", max=MAX_TEXT_LENGTH)
    if has_control_characters(text):
        raise ValueRejected("control_characters")
    return text

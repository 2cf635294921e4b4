"""Opaque, tamper-proof cursors for the list's keyset pagination (the envelope is router's)."""

import base64
import hashlib
import hmac
from dataclasses import dataclass

MAX_ID = 2**63 - 1
TAG_BYTES = 12


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class Cursor:
    """A position in the id-descending list: `forward` reads older contacts after `id`."""

    id: int
    forward: bool


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict decoding: only the one spelling _b64 produces is accepted (no stray characters,
    padding or unused bits), so no two tokens mean the same cursor."""
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(data) != text:
        raise ValueError(text)
    return data


def _tag(payload: bytes, key: bytes, space_id: int, bound: str) -> bytes:
    # The Space and the filters (`bound`) are part of the signed message: a cursor only works
    # where it was issued, and with the filters it was made with (a page of other filters
    # would skip or repeat contacts).
    message = str(space_id).encode() + b"|" + payload
    if bound:
        message += b"|" + bound.encode()
    return hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]


def encode_cursor(cursor: Cursor, key: bytes, space_id: int, bound: str = "") -> str:
    payload = f"{'n' if cursor.forward else 'p'}{cursor.id}".encode()
    return f"{_b64(payload)}.{_b64(_tag(payload, key, space_id, bound))}"


def decode_cursor(token: str, key: bytes, space_id: int, bound: str = "") -> Cursor:
    """The cursor in `token`, or InvalidCursor when it is malformed or was not signed by us
    for this Space and these filters."""
    try:
        payload_text, tag_text = token.split(".")
        payload, tag = _unb64(payload_text), _unb64(tag_text)
    except ValueError:
        raise InvalidCursor(token) from None
    if not hmac.compare_digest(tag, _tag(payload, key, space_id, bound)):
        raise InvalidCursor(token)
    direction, digits = payload[:1], payload[1:]
    if direction not in (b"n", b"p") or not digits.isdigit() or not 0 < int(digits) <= MAX_ID:
        raise InvalidCursor(token)
    return Cursor(int(digits), forward=direction == b"n")

"""Messages and their signatures, as the Standard Webhooks specification writes them.

A message's body is fixed when it is made (`message_body`), so every attempt signs the same
bytes; the signature covers `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 under the
secret's key (the base64 after `whsec_`). During a secret's rotation both secrets sign, and the
`webhook-signature` header carries both, separated by a space, as the specification allows:
a receiver that knows either accepts the message.
"""

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

import orjson

from contactbase import __version__
from contactbase.contacts.schemas import wire_time

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the specification asks for 24 to 64
MESSAGE_PREFIX = "msg_"
USER_AGENT = f"contactbase-webhooks/{__version__}"


class Event(NamedTuple):
    """An event of the change feed, with its row id (the order it was written in)."""

    id: int
    seq: int
    type: str
    contact_id: int
    merged_into: int | None
    occurred_at: datetime


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_message_id() -> str:
    """A `webhook-id`: unique per message, the same for each of its attempts."""
    return MESSAGE_PREFIX + secrets.token_hex(16)


def message_body(event: Event) -> str:
    """`{"type", "timestamp", "data": {the change feed's event}}`."""
    occurred_at = wire_time(event.occurred_at)
    data = {
        "seq": event.seq,
        "type": event.type,
        "contact_id": event.contact_id,
        "merged_into": event.merged_into,
        "occurred_at": occurred_at,
    }
    return orjson.dumps({"type": event.type, "timestamp": occurred_at, "data": data}).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 of HMAC-SHA256>` of one message under one secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    signing_secrets: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed by every secret given."""
    signatures = (signature(secret, message_id, timestamp, body) for secret in signing_secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }

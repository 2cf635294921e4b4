"""Spaces and their API keys: the rules the CLI and the HTTP layer share."""

import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from sqlalchemy import Text, bindparam, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from contactbase.contacts.custom_fields import SLOTS
from contactbase.db import utcnow
from contactbase.errors import InvalidInput, NotFound, SpaceInactive, Unauthenticated, invalid
from contactbase.prepared import Connection, Prepared
from contactbase.ratelimit import DEFAULT_LIMITS, ENDPOINTS
from contactbase.spaces.models import ApiKey, ServiceSecret, Space
from contactbase.validation import has_control_characters

PERMISSIONS = ("contacts:read", "contacts:write", "contacts:delete")
# A key gets these unless others are asked for; erasing (contacts:delete) is never a default.
DEFAULT_PERMISSIONS = ("contacts:read", "contacts:write")
KEY_PREFIX = "cb_"
KEY_RANDOM_BYTES = 32
# "cb_" + 43 characters of URL-safe base64; anything far from that shape is refused unread.
KEY_LENGTHS = range(len(KEY_PREFIX) + 40, len(KEY_PREFIX) + 200)
SHOWN_PREFIX_LENGTH = 11


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key's Space and what the key may do."""

    space_id: int
    key_id: int
    timezone: str
    permissions: frozenset[str]
    rate_limits: dict[str, int] = field(default_factory=dict)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(
            "timezone", f"The timezone field must be an IANA time zone ({name!r})."
        ) from None
    return name


async def create_space(session: AsyncSession, name: str, timezone: str = "UTC") -> Space:
    if not name.strip():
        raise invalid("name", "The name field must not be empty.")
    space = Space(
        name=name.strip(),
        status="active",
        timezone=check_timezone(timezone),
        rate_limits={},
        created_at=utcnow(),
    )
    session.add(space)
    await session.flush()
    return space


async def list_spaces(session: AsyncSession) -> Sequence[Space]:
    return (await session.scalars(select(Space).order_by(Space.id))).all()


async def get_space(session: AsyncSession, space_id: int) -> Space:
    space = await session.get(Space, space_id)
    if space is None:
        raise NotFound(f"No Space with id {space_id}.")
    return space


async def set_status(session: AsyncSession, space_id: int, status: str) -> Space:
    space = await get_space(session, space_id)
    space.status = status
    await session.flush()
    return space


async def set_limit(session: AsyncSession, space_id: int, endpoint: str, per_minute: int) -> Space:
    if endpoint not in ENDPOINTS:
        raise invalid("endpoint", f"The endpoint must be one of {', '.join(ENDPOINTS)}.")
    if per_minute < 1:
        # A 429's Retry-After promises a retry that succeeds (SPEC 2); under 0 none ever would.
        raise invalid(
            "per_minute",
            f"The limit must be 1 or more requests per minute, not {per_minute}: the smallest "
            "allowed is 1, since every refused client is told when a retry will succeed.",
        )
    space = await get_space(session, space_id)
    space.rate_limits = {**space.rate_limits, endpoint: per_minute}
    await session.flush()
    return space


# A label may not look like a slot's name: the list's keys would then collide.
SLOT_NAME = re.compile(r"profile_field_[0-9]+")
MAX_LABEL = 100


async def set_label(session: AsyncSession, space_id: int, slot: str, label: str | None) -> Space:
    """Name a custom-field slot for `use_custom_field_labels` (None: the slot keeps its name).
    A label is unique within the Space."""
    if slot not in SLOTS:
        raise invalid(
            "slot", f"The slot must be one of profile_field_1 to profile_field_30 ({slot!r})."
        )
    space = await get_space(session, space_id)
    labels = {name: text for name, text in space.custom_field_labels.items() if name != slot}
    if label is not None:
        label = label.strip()
        if not label or len(label) > MAX_LABEL or has_control_characters(label):
            raise invalid(
                "label", f"The label must be 1 to {MAX_LABEL} printable characters ({label!r})."
            )
        if SLOT_NAME.fullmatch(label):
            raise invalid("label", f"The label must not look like a slot's name ({label!r}).")
        taken = next((name for name, text in labels.items() if text == label), None)
        if taken is not None:
            raise invalid("label", f"The label {label!r} already names {taken} in this Space.")
        labels[slot] = label
    space.custom_field_labels = dict(sorted(labels.items(), key=lambda item: SLOTS.index(item[0])))
    await session.flush()
    return space


def effective_limits(space: Space) -> dict[str, int]:
    return {**DEFAULT_LIMITS, **space.rate_limits}


async def create_key(
    session: AsyncSession,
    space_id: int,
    name: str | None = None,
    permissions: Sequence[str] = DEFAULT_PERMISSIONS,
) -> tuple[ApiKey, str]:
    """Create a key; the full key is returned here and never again."""
    await get_space(session, space_id)
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown or not permissions:
        raise InvalidInput(
            {"permission": [f"Permissions must be among {', '.join(PERMISSIONS)} ({unknown})."]}
        )
    raw_key = new_key()
    key = ApiKey(
        space_id=space_id,
        name=name,
        prefix=raw_key[:SHOWN_PREFIX_LENGTH],
        key_hash=hash_key(raw_key),
        permissions=[p for p in PERMISSIONS if p in permissions],
        created_at=utcnow(),
        revoked_at=None,
    )
    session.add(key)
    await session.flush()
    return key, raw_key


async def list_keys(session: AsyncSession, space_id: int) -> Sequence[ApiKey]:
    await get_space(session, space_id)
    return (
        await session.scalars(select(ApiKey).where(ApiKey.space_id == space_id).order_by(ApiKey.id))
    ).all()


async def revoke_key(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"No API key with id {key_id}.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key


class KeyRow(NamedTuple):
    key_id: int
    permissions: str  # JSON text
    space_id: int
    status: str
    timezone: str
    rate_limits: str  # JSON text


# The query behind every request: the live key with this hash, and its Space. The JSON columns
# come as text, which both drivers give alike.
KEY_LOOKUP = Prepared(
    select(
        ApiKey.id,
        cast(ApiKey.permissions, Text),
        Space.id,
        Space.status,
        Space.timezone,
        cast(Space.rate_limits, Text),
    )
    .join(Space, Space.id == ApiKey.space_id)
    .where(ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None)),
    KeyRow,
)


def plausible_key(raw_key: str | None) -> bool:
    """The shape of a key: anything far from it is refused unread."""
    return raw_key is not None and raw_key.startswith(KEY_PREFIX) and len(raw_key) in KEY_LENGTHS


async def key_in_use(session: AsyncSession, raw_key: str) -> bool:
    """The key is known, not revoked, and its Space active: KEY_LOOKUP, through a session
    (the CLI's)."""
    found = await session.execute(KEY_LOOKUP.statement, {"key_hash": hash_key(raw_key)})
    row = found.first()
    return row is not None and row.status == "active"


async def authenticate(connection: Connection, key_hash: str) -> Caller:
    """The caller behind a key, by its hash; 401 for unknown or revoked keys, 403 for a
    lapsed Space."""
    row = await KEY_LOOKUP.row(connection, {"key_hash": key_hash})
    if row is None:
        raise Unauthenticated()
    if row.status != "active":
        raise SpaceInactive()
    return Caller(
        row.space_id,
        row.key_id,
        row.timezone,
        frozenset(orjson.loads(row.permissions)),
        orjson.loads(row.rate_limits),
    )


class SecretRow(NamedTuple):
    value: str


SIGNING_SECRET = Prepared(
    select(ServiceSecret.value).where(ServiceSecret.name == bindparam("name")), SecretRow
)


async def signing_secret(connection: Connection) -> bytes:
    """The secret generated by `migrate`, shared through the database by every worker."""
    row = await SIGNING_SECRET.row(connection, {"name": "signing"})
    if row is None:
        raise RuntimeError("the signing secret is missing: run `contactbase migrate`")
    return row.value.encode()


def space_view(space: Space) -> dict[str, Any]:
    return {
        "id": space.id,
        "name": space.name,
        "status": space.status,
        "timezone": space.timezone,
        "rate_limits": effective_limits(space),
        "custom_field_labels": space.custom_field_labels,
        "created_at": space.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def key_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "space_id": key.space_id,
        "name": key.name,
        "prefix": key.prefix,
        "permissions": key.permissions,
        "created_at": key.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "revoked_at": key.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ") if key.revoked_at else None,
    }

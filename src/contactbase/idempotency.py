"""Idempotency-Key (SPEC 6.2): a retried request gets the first one's answer and changes
nothing. The database holds the keys, so every worker and host shares them.

The protocol, for an operation declared `idempotent` (the dispatcher runs it):
- On receipt, once the key, permission, limit, query and body have passed, `claim` writes a
  marker in a transaction of its own: the row (Space, key) with the request's fingerprint and no
  answer, expiring in MARKER_SECONDS. If the row is there already, it answers instead: another
  fingerprint, 422 `idempotency_mismatch`; no answer yet, 409 `idempotency_in_flight` with
  `Retry-After: 1`, at once; an answer, that answer again with `Idempotent-Replayed: true`. A row
  that has expired (the marker of a process that died, an answer older than the TTL) is taken
  over.
- The handler stores its answer with `keep`, in the transaction of its effect, when it is one to
  store (2xx, and a conflict's 409): the marker becomes the answer, expiring after the TTL. A
  crash leaves both the effect and the answer, or neither. The marker's expiry as read at the
  claim is the claim's token: if the marker lapsed and another request took the key over, `keep`
  finds no row of its own, and the effect's transaction fails with 409 `idempotency_in_flight`.
- Otherwise (the handler failed, or answered what is not stored) the dispatcher `release`s the
  marker, so that the key may be retried at once.
- `sweep` deletes what has expired; the app runs it every SWEEP_SECONDS.
"""

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import String, bindparam, delete, null, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from contactbase.contacts.models import IdempotentContact, IdempotentRequest
from contactbase.contacts.statements import bulk_insert
from contactbase.db import Database, Id, Lease, utcnow
from contactbase.errors import Conflict, IdempotencyInFlight, IdempotencyMismatch, invalid
from contactbase.prepared import Connection, Prepared, no_rows

log = logging.getLogger("contactbase")

HEADER = "Idempotency-Key"
MARKER_SECONDS = 60
SWEEP_SECONDS = 300.0
MAX_KEY_LENGTH = 255
REPLAYED = (b"idempotent-replayed", b"true")
ROW = IdempotentRequest
# In an UPDATE, a parameter may not bear a column's name.
KEY = (ROW.space_id == bindparam("space"), ROW.key == bindparam("sent_key"))
MARKER = {
    "space_id": bindparam("space"),
    "key": bindparam("sent_key"),
    "fingerprint": bindparam("fingerprint"),
    "status": null(),
    "body": null(),
    "expires_at": bindparam("expires_at"),
}


class Claimed(NamedTuple):
    key: str


class Held(NamedTuple):
    fingerprint: str
    status: int | None
    body: bytes | None


def _claim_statement(dialect: Any) -> Any:
    """Insert the marker; over a row that has expired, in its place. Returns the key when the
    marker was written."""
    inserted = dialect.insert(ROW).values(MARKER)
    taken_over = {name: inserted.excluded[name] for name in ("fingerprint", "status", "body")}
    return inserted.on_conflict_do_update(
        index_elements=[ROW.space_id, ROW.key],
        set_={**taken_over, "expires_at": inserted.excluded.expires_at},
        where=ROW.expires_at < bindparam("now"),
    ).returning(ROW.key)


CLAIM = Prepared(_claim_statement(postgresql), Claimed, sqlite=_claim_statement(sqlite))
HELD = Prepared(select(ROW.fingerprint, ROW.status, ROW.body).where(*KEY), Held)
TOKEN = ROW.expires_at == bindparam("token")
KEEP = Prepared(
    update(ROW)
    .where(*KEY, TOKEN, ROW.status.is_(None))
    .values(status=bindparam("status"), body=bindparam("body"), expires_at=bindparam("expires_at"))
    .returning(ROW.key),
    Claimed,
)
RELEASE = Prepared(delete(ROW).where(*KEY, TOKEN, ROW.status.is_(None)), no_rows)
SWEEP = delete(ROW).where(ROW.expires_at < bindparam("now"))
NAMED = bulk_insert(
    IdempotentContact,
    {"space_id": bindparam("space", type_=Id), "key": bindparam("sent_key", type_=String())},
    ["contact_id"],
)


@dataclass
class Claim:
    """A request's hold on its key: written as a marker, until its answer is kept."""

    space_id: int
    key: str
    token: datetime  # the marker's expiry, as written
    ttl_seconds: int
    kept: bool = False

    def params(self) -> dict[str, Any]:
        return {"space": self.space_id, "sent_key": self.key, "token": self.token}


def sent_key(request: Request) -> str | None:
    """The Idempotency-Key sent, if any: 1 to 255 printable ASCII characters, else 422."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise invalid(
            HEADER,
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
        )
    return key


def fingerprint(method: str, path: str, query: list[tuple[str, str]], body: bytes) -> str:
    """The request as a hash: method, path, query (in any order) and the parsed JSON body (so
    that key order and whitespace do not matter)."""
    parsed = orjson.loads(body) if body else None
    canonical = orjson.dumps([method, path, sorted(query), parsed], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


async def claim(
    lease: Lease, space_id: int, key: str, digest: str, ttl_seconds: int, request_id: str
) -> Claim | Response:
    """Hold `key` for this request, or the answer it gets instead: the stored answer
    replayed, or 422 / 409 raised."""
    now = utcnow()
    token = now + timedelta(seconds=MARKER_SECONDS)
    params = {"space": space_id, "sent_key": key, "fingerprint": digest, "expires_at": token}

    async def write(connection: Connection) -> Held | None:
        if await CLAIM.row(connection, params | {"now": now}) is not None:
            return None
        return await HELD.row(connection, params)

    held = await lease.write(write)
    if held is None:
        return Claim(space_id, key, token, ttl_seconds)
    if held.fingerprint != digest:
        raise IdempotencyMismatch()
    if held.status is None or held.body is None:
        raise IdempotencyInFlight()
    return replay(held.status, held.body, request_id)


def replay(status: int, body: bytes, request_id: str) -> Response:
    """A stored answer again; an error's body names this request's id (SPEC 6.1)."""
    if status >= 400:
        content = orjson.loads(body)
        content["request_id"] = request_id
        body = orjson.dumps(content)
    response = Response(body, status_code=status, media_type="application/json")
    if status == IdempotencyInFlight.status:
        response.headers["Retry-After"] = "1"
    response.raw_headers.append(REPLAYED)
    return response


def worth_keeping(response: Response) -> bool:
    """What is stored: a success, and the 409 of a conflict (SPEC 6.2)."""
    status = response.status_code
    if status == Conflict.status:
        return bool(orjson.loads(response.body).get("code") == Conflict.code)
    return status < 400


async def keep(
    target: "Connection | AsyncSession",
    held: Claim,
    response: Response,
    contact_ids: Sequence[int] = (),
) -> None:
    """Store `response` as the key's answer, in the caller's transaction (that of the effect),
    with the contacts it names (erasing one of them deletes the answer)."""
    params = held.params() | {
        "status": response.status_code,
        "body": bytes(response.body),
        "expires_at": utcnow() + timedelta(seconds=held.ttl_seconds),
    }
    if isinstance(target, AsyncSession):
        stored = bool((await target.execute(KEEP.statement, params)).all())
    else:
        stored = bool(await KEEP.rows(target, params))
    if not stored:  # the marker lapsed and another request took the key over
        raise IdempotencyInFlight()
    if contact_ids:
        assert not isinstance(target, AsyncSession), "named contacts go with a contact's write"
        fixed = {"space": held.space_id, "sent_key": held.key}
        await NAMED.run(target, fixed, [(contact,) for contact in sorted(set(contact_ids))])
    held.kept = True


async def release(db: Database, held: Claim) -> None:
    """Remove the marker of a request whose answer is not kept; if that fails, it lapses."""
    lease = Lease(db)
    failure: BaseException | None = None
    try:
        await lease.write(lambda connection: RELEASE.run(connection, held.params()))
    except Exception as exc:
        failure = exc
        log.warning("could not release an idempotency marker (it lapses): %r", exc)
    finally:
        await lease.release(failure)


async def sweep(db: Database) -> None:
    """Delete the keys whose answers (or markers) have expired."""
    async with db.writer() as session, session.begin():
        await session.execute(SWEEP, {"now": utcnow()})

"""Who is calling: the bearer key, its Space, and the permission and limit of each endpoint.

The dispatcher (contactbase.dispatch) calls `authorise` for every operation that declares an
`Access`, before it reads the query or the body, so that a bad key is a 401 before a bad
parameter is a 422. The OpenAPI document declares the scheme (openapi.SECURITY_SCHEME).
"""

from dataclasses import dataclass

from starlette.requests import Request

from contactbase.db import Lease
from contactbase.errors import PermissionMissing, TooManyRequests, Unauthenticated
from contactbase.ratelimit import DEFAULT_LIMITS, Decision
from contactbase.spaces.service import Caller, authenticate, hash_key, plausible_key
from contactbase.state import AppState


@dataclass(frozen=True)
class Access:
    """What an endpoint requires: a permission, and the rate limit it counts against."""

    permission: str
    endpoint: str


CREATE = Access("contacts:write", "create")
GET = Access("contacts:read", "get")
LIST = Access("contacts:read", "list")
UPDATE = Access("contacts:write", "update")
EXPORT = Access("contacts:read", "export")
BATCH = Access("contacts:write", "batch")
ERASE = Access("contacts:delete", "delete")
CHANGES = Access("contacts:read", "changes")
# Polling an export counts against the get limit, as Cometly counts it.
POLL_EXPORT = Access("contacts:read", "get")


def bearer_key(request: Request) -> str | None:
    """The key of an `Authorization: Bearer …` header (the scheme in any case), else None."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    return key if key and scheme.lower() == "bearer" else None


async def authorise(state: AppState, request: Request, lease: Lease, access: Access) -> Caller:
    """Authenticate the key, require the permission, and count the request against the
    Space's limit for the endpoint; 401, 403 or 429 otherwise. A key of the wrong shape is
    refused before any connection is taken."""
    key = bearer_key(request)
    if key is None or not plausible_key(key):
        raise Unauthenticated()
    key_hash = hash_key(key)
    cached = state.keys.find(key_hash)
    embedded = state.db.embedded
    if embedded is not None:  # SQLite: the mark comes first, in the request's snapshot
        connection = await lease.connect()
        mark: object = await embedded.change_mark(connection)
        if cached is not None and cached[1] == mark:
            return await _count(state, request, cached[0], access)
        caller = await authenticate(connection, key_hash)
        state.keys.keep(key_hash, caller, mark)
        return await _count(state, request, caller, access)
    if not state.limiter.keeps_marks:  # no mark to trust a cache by: the key is read
        caller = await authenticate(await lease.connect(), key_hash)
        return await _count(state, request, caller, access)
    counted = None
    if cached is not None:
        caller, mark = cached
        if access.permission in caller.permissions:
            counted = await _hit(state, caller, access)
        current = counted.change_mark if counted else await state.limiter.change_mark()
        if current is not None and current == mark:
            return _admitted(state, request, caller, access, counted)
        # Changed since it was read, or the mark unknown (Redis away): the key is read again,
        # current as of the mark just read.
        mark = current
    else:
        mark = await state.limiter.change_mark()
    caller = await authenticate(await lease.connect(), key_hash)
    if mark is not None:  # read after the mark was: current as of it
        state.keys.keep(key_hash, caller, mark)
    if counted is not None and cached is not None:
        same = (cached[0].space_id, counted.limit) == (caller.space_id, _limit(caller, access))
        if same:  # counted already, against the right Space and limit: not twice
            return _admitted(state, request, caller, access, counted)
    return await _count(state, request, caller, access)


async def _count(state: AppState, request: Request, caller: Caller, access: Access) -> Caller:
    """Require the permission, then count the request against the Space's limit."""
    if access.permission not in caller.permissions:
        raise PermissionMissing(access.permission)
    return _admitted(state, request, caller, access, await _hit(state, caller, access))


def _limit(caller: Caller, access: Access) -> int:
    return caller.rate_limits.get(access.endpoint, DEFAULT_LIMITS[access.endpoint])


async def _hit(state: AppState, caller: Caller, access: Access) -> Decision | None:
    return await state.limiter.hit(caller.space_id, access.endpoint, _limit(caller, access))


def _admitted(
    state: AppState, request: Request, caller: Caller, access: Access, decision: Decision | None
) -> Caller:
    """The caller, when the limit let the request in; 403 without the permission, 429 over
    the limit."""
    if access.permission not in caller.permissions:
        raise PermissionMissing(access.permission)
    if decision is None:
        state.metrics.unlimited.inc()
        return caller
    request.state.ratelimit = decision  # the middleware puts its headers on the response
    if not decision.allowed:
        raise TooManyRequests(
            f"Too many {decision.endpoint} requests: this Space may make {decision.limit} per "
            f"minute. Retry after {decision.retry_after} seconds."
        )
    return caller

"""Who is calling: the bearer key, its Space, and the permission and limit of each endpoint.

The dispatcher (contactbase.dispatch) calls `authorise` for every operation that declares an
`Access`, before it reads the query or the body, so that a bad key is a 401 before a bad
parameter is a 422. The OpenAPI document declares the scheme (openapi.SECURITY_SCHEME).
"""

from dataclasses import dataclass

from starlette.requests import Request

from contactbase.db import Lease
from contactbase.errors import PermissionMissing, TooManyRequests, Unauthenticated
from contactbase.ratelimit import DEFAULT_LIMITS
from contactbase.spaces.service import Caller, authenticate, plausible_key
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
    if not plausible_key(key):
        raise Unauthenticated()
    caller = await authenticate(await lease.connect(), key)
    if access.permission not in caller.permissions:
        raise PermissionMissing(access.permission)
    endpoint = access.endpoint
    limit = caller.rate_limits.get(endpoint, DEFAULT_LIMITS[endpoint])
    decision = await state.limiter.hit(caller.space_id, endpoint, limit)
    if decision is None:
        state.metrics.unlimited.inc()
        return caller
    request.state.ratelimit = decision  # the middleware puts its headers on the response
    if not decision.allowed:
        raise TooManyRequests(
            f"Too many {endpoint} requests: this Space may make {limit} per minute. "
            f"Retry after {decision.retry_after} seconds."
        )
    return caller

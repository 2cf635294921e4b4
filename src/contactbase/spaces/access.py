"""Who is calling: the bearer key, its Space, and the permission and limit of each endpoint.

Endpoints call `authorise` themselves, first thing inside their transaction (no dependency
injection: on the hot path FastAPI's resolution of a few dependencies cost more CPU than the
whole of the SQL). The OpenAPI document declares the scheme (openapi.SECURITY_SCHEME).
"""

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from contactbase.db import Connection
from contactbase.errors import Forbidden, TooManyRequests
from contactbase.ratelimit import DEFAULT_LIMITS
from contactbase.spaces.service import Caller, authenticate, signing_secret


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


async def authorise(request: Request, connection: Connection, access: Access) -> Caller:
    """Authenticate the key, require the permission, and count the request against the
    Space's limit for the endpoint; 401, 403 or 429 otherwise."""
    caller = await authenticate(connection, bearer_key(request))
    if access.permission not in caller.permissions:
        raise Forbidden(f"This API key lacks the {access.permission} permission.")
    endpoint = access.endpoint
    limit = caller.rate_limits.get(endpoint, DEFAULT_LIMITS[endpoint])
    state = request.app.state
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


async def signing_key(request: Request, session: AsyncSession) -> bytes:
    """The service's signing secret: from the settings, else from the database, read once."""
    state = request.app.state
    if state.signing_key is None:
        state.signing_key = await signing_secret(session)
    key: bytes = state.signing_key
    return key

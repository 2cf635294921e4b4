"""Who is calling: the bearer key, its Space, and the permission each endpoint needs."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contactbase.db import SessionDep
from contactbase.errors import Forbidden, TooManyRequests
from contactbase.ratelimit import DEFAULT_LIMITS
from contactbase.spaces.service import Caller, authenticate, signing_secret

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="A key made by `contactbase key create`: `Authorization: Bearer cb_…`.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


class Authorise:
    """Dependency: authenticate the key, then require `permission` for `endpoint`."""

    def __init__(self, permission: str, endpoint: str) -> None:
        self.permission = permission
        self.endpoint = endpoint

    async def __call__(
        self, request: Request, session: SessionDep, credentials: Credentials
    ) -> Caller:
        caller = await authenticate(session, credentials.credentials if credentials else None)
        if self.permission not in caller.permissions:
            raise Forbidden(f"This API key lacks the {self.permission} permission.")
        limit = caller.rate_limits.get(self.endpoint, DEFAULT_LIMITS[self.endpoint])
        decision = await request.app.state.limiter.hit(caller.space_id, self.endpoint, limit)
        if decision is None:
            request.app.state.metrics.unlimited.inc()
            return caller
        request.state.ratelimit = decision  # the middleware puts its headers on the response
        if not decision.allowed:
            raise TooManyRequests(
                f"Too many {self.endpoint} requests: this Space may make {limit} per minute. "
                f"Retry after {decision.retry_after} seconds."
            )
        return caller


CanCreate = Annotated[Caller, Depends(Authorise("contacts:write", "create"))]
CanGet = Annotated[Caller, Depends(Authorise("contacts:read", "get"))]
CanList = Annotated[Caller, Depends(Authorise("contacts:read", "list"))]
CanUpdate = Annotated[Caller, Depends(Authorise("contacts:write", "update"))]
CanExport = Annotated[Caller, Depends(Authorise("contacts:read", "export"))]
# Polling an export counts against the get limit, as Cometly counts it.
CanPollExport = Annotated[Caller, Depends(Authorise("contacts:read", "get"))]


async def signing_key(request: Request, session: SessionDep) -> bytes:
    """The service's signing secret: from the settings, else from the database, read once."""
    state = request.app.state
    if state.signing_key is None:
        state.signing_key = await signing_secret(session)
    key: bytes = state.signing_key
    return key


SigningKey = Annotated[bytes, Depends(signing_key)]

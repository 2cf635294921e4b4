"""Who is calling: the bearer key, its Space, and the permission each endpoint needs."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contactbase.db import SessionDep
from contactbase.errors import Forbidden
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

    async def __call__(self, session: SessionDep, credentials: Credentials) -> Caller:
        caller = await authenticate(session, credentials.credentials if credentials else None)
        if self.permission not in caller.permissions:
            raise Forbidden(f"This API key lacks the {self.permission} permission.")
        return caller


CanCreate = Annotated[Caller, Depends(Authorise("contacts:write", "create"))]
CanGet = Annotated[Caller, Depends(Authorise("contacts:read", "get"))]
CanList = Annotated[Caller, Depends(Authorise("contacts:read", "list"))]


async def signing_key(request: Request, session: SessionDep) -> bytes:
    """The service's signing secret: from the settings, else from the database, read once."""
    state = request.app.state
    if state.signing_key is None:
        state.signing_key = await signing_secret(session)
    key: bytes = state.signing_key
    return key


SigningKey = Annotated[bytes, Depends(signing_key)]

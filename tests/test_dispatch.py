"""The public API's dispatcher (contactbase.dispatch): it serves the declared operations under a
proxy's root path, prefers a path spelled out to a parameter's value, and refuses a declaration
whose path parameters are not the documented ones."""

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.responses import Response

from contactbase.db import Database
from contactbase.dispatch import Api, Call
from contactbase.spaces import access
from tests.factories import CONTACTS, SEED, add_contact, answered, make_tenant


async def test_operations_are_served_under_a_root_path(app: FastAPI, db: Database) -> None:
    """Behind a proxy that strips /crm, the app sees root_path=/crm and a path that keeps it
    (as uvicorn's --root-path gives them); links carry the prefix."""
    auth = await make_tenant(db)
    transport = httpx.ASGITransport(app=app, root_path="/crm", raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        created = await add_contact(client, auth, SEED)
        got = await client.get(f"/crm{CONTACTS}/{created['id']}", headers=auth)
        assert got.status_code == 200, got.text
        assert got.json()["emails"] == SEED["emails"]
        listed = await client.get(f"/crm{CONTACTS}", headers=auth)
        assert listed.json()["path"] == f"http://testserver/crm{CONTACTS}"


async def test_a_path_spelled_out_is_not_a_parameter_value(
    client: httpx.AsyncClient, db: Database
) -> None:
    """/contacts/exports is the exports collection, never the contact with id "exports"."""
    auth = await make_tenant(db)
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, f"{CONTACTS}/exports", headers=auth)
        assert response.status_code == 405, (method, response.text)
        assert response.headers["allow"] == "POST"
        assert answered(response) == {"message": "Method not allowed."}


async def test_a_parameter_still_takes_any_other_value(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await make_tenant(db)
    response = await client.get(f"{CONTACTS}/export", headers=auth)
    assert response.status_code == 422
    assert list(answered(response)["errors"]) == ["id"]


class NoQuery(BaseModel):
    pass


def test_a_declaration_names_each_path_parameter_once() -> None:
    api = Api("/v")

    async def handler(call: Call[NoQuery, None]) -> Response:
        return Response()

    with pytest.raises(ValueError, match="document each path parameter"):
        api.operation(
            "GET", "/things/{thing_id}", operation_id="x", access=access.GET, query=NoQuery
        )(handler)
    with pytest.raises(ValueError, match="document each path parameter"):
        api.operation(
            "GET",
            "/things",
            operation_id="y",
            access=access.GET,
            query=NoQuery,
            parameters={"thing_id": {}},
        )(handler)

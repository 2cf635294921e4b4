"""/docs (Swagger UI) and /redoc (ReDoc) from contactbase alone (SPEC 6.9, issue 17): each page
names only what the app serves itself, under the proxy's prefix when there is one, and no other
site; the assets are fastapi-offline's copies, and the folder they are served from gives out
nothing else. The pages in a real browser: tests/test_docs_browser.py."""

import re
from importlib.resources import files
from pathlib import PurePosixPath

import httpx
import pytest
from fastapi import FastAPI

# What the pages name: stylesheets, scripts and icons, and the OpenAPI document they show.
NAMED = re.compile(r"""(?:src|href|spec-url)="([^"]*)"|url: '([^']*)'""")
PAGES = {
    "/docs": {
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/favicon.png",
        "/openapi.json",
    },
    "/redoc": {"/docs/redoc.standalone.js", "/docs/favicon.png", "/openapi.json"},
}
# JavaScript under either of its names: which one a server gives depends on the machine's
# mimetypes table, and browsers run both.
MEDIA_TYPES = {
    ".css": {"text/css"},
    ".js": {"text/javascript", "application/javascript"},
    ".png": {"image/png"},
    ".json": {"application/json"},
}
PACKAGE_ASSETS = files("fastapi_offline") / "static"


def named(html: str) -> set[str]:
    return {attribute or script for attribute, script in NAMED.findall(html)}


@pytest.mark.parametrize("root_path", ["", "/crm"], ids=["no prefix", "behind /crm"])
@pytest.mark.parametrize("page", sorted(PAGES))
async def test_a_docs_page_names_only_what_the_app_serves(
    app: FastAPI, page: str, root_path: str
) -> None:
    """Behind a proxy that strips /crm the app sees root_path=/crm and paths that keep it (as
    uvicorn's --root-path gives them): every URL on the page carries the prefix."""
    transport = httpx.ASGITransport(app=app, root_path=root_path, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get(root_path + page)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        # No CDN, no font service, no other site of any kind.
        assert "http://" not in response.text
        assert "https://" not in response.text
        urls = named(response.text)
        assert urls == {root_path + url for url in PAGES[page]}
        for url in sorted(urls):
            served = await client.get(url)
            assert served.status_code == 200, (url, served.text)
            media_type = served.headers["content-type"].split(";")[0]
            assert media_type in MEDIA_TYPES[PurePosixPath(url).suffix], (url, media_type)
            if url.startswith(f"{root_path}/docs/"):
                name = PurePosixPath(url).name
                assert served.content == (PACKAGE_ASSETS / name).read_bytes(), url


@pytest.mark.parametrize(
    "path",
    [
        "/docs/",
        "/docs/index.html",
        "/docs/oauth2-redirect.html",
        "/docs/swagger-ui.js.map",
        # The package's own code, one folder up from its assets.
        "/docs/%2e%2e/__init__.py",
        "/docs/..%2f__init__.py",
    ],
)
async def test_the_assets_folder_gives_out_nothing_else(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404, (path, response.text)
    assert response.json()["code"] == "not_found"
    assert "location" not in response.headers


async def test_an_asset_is_only_read(client: httpx.AsyncClient) -> None:
    response = await client.post("/docs/swagger-ui.css", content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.json()["code"] == "method_not_allowed"
    assert (await client.head("/docs/swagger-ui.css")).status_code == 200

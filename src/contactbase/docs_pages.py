"""The OpenAPI document's two viewers, /docs (Swagger UI) and /redoc (ReDoc), served whole by
contactbase (SPEC 6.9): their script, style and icon are the copies the fastapi-offline package
installs, served under /docs/, so that the pages need no internet (with FastAPI's defaults they
load them from a CDN, and a closed network sees a blank page).

Every URL a page names starts with the request's root path, so the pages work behind a proxy's
prefix (`serve --root-path`) as they do without one."""

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

SWAGGER_UI_PATH = "/docs"
REDOC_PATH = "/redoc"
# Under the Swagger UI page's own path: the routes the pages add stay on the short list of those
# that answer without a key (tests/test_routes.py), and /docs/ itself is still a 404.
ASSETS_PATH = "/docs"
# The package's folder of assets, and the files of it that the pages name.
ASSETS = ("fastapi_offline", "static")
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def add_docs_pages(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets on `app`, showing its OpenAPI document; the app is
    built with `docs_url=None, redoc_url=None`, so that FastAPI's own pages are not there."""
    openapi_url = app.openapi_url
    assert openapi_url is not None, "the pages show the OpenAPI document: it must be served"

    def root(request: Request) -> str:
        prefix: str = request.scope.get("root_path", "")
        return prefix.rstrip("/")

    def asset(request: Request, name: str) -> str:
        return f"{root(request)}{ASSETS_PATH}/{name}"

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=root(request) + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, SWAGGER_JS),
            swagger_css_url=asset(request, SWAGGER_CSS),
            swagger_favicon_url=asset(request, FAVICON),
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=root(request) + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, REDOC_JS),
            redoc_favicon_url=asset(request, FAVICON),
            with_google_fonts=False,  # ReDoc falls back to the browser's fonts
        )

    app.add_route(SWAGGER_UI_PATH, swagger_ui, include_in_schema=False)
    app.add_route(REDOC_PATH, redoc, include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(packages=[ASSETS]), name="docs-assets")

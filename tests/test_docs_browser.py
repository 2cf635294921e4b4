"""/docs and /redoc in a real browser (SPEC 6.9, issue 17): Debian's chromium, headless, driven by
Playwright, against a real `contactbase serve`, with every request for anything but 127.0.0.1
refused: each page shows every operation of the OpenAPI document with no network.

Outside CI, a machine without chromium or Playwright skips these tests and says so in one line
(`make test-browser` installs chromium); in CI (CI=true) that is a failure, as .ci/run installs
it."""

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import httpx
import pytest

from tests.test_headers import Served, contactbase_serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

IN_CI = os.environ.get("CI") == "true"
CHROMIUM = "/usr/bin/chromium"
# ReDoc's footer ("API docs by Redocly") asks for its maker's logo from a CDN, whatever its
# options, and hides the image when it does not load: the one request a page may make, refused.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# Time for a page to load its assets and the document and draw them, on a busy 2-core machine.
DRAWN_MS = 30_000


def unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI installs it: .ci/run)")
    pytest.skip(f"{reason}: `make test-browser` installs it")


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    """Debian's chromium, headless; Playwright's own browser builds are never downloaded."""
    if not Path(CHROMIUM).exists():
        unavailable(f"chromium is not installed ({CHROMIUM}, Debian's package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (a dev dependency)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with contactbase_serve(tmp_path_factory.mktemp("docs")) as server:
        yield server


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    summary: str
    tag: str


def documented(port: int) -> list[Operation]:
    """Every operation of the document the server gives out, which the pages must all show."""
    document = httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()
    operations = [
        Operation(
            definition["operationId"],
            method.upper(),
            path,
            definition["summary"],
            definition["tags"][0],
        )
        for path, methods in document["paths"].items()
        for method, definition in methods.items()
    ]
    assert "createContact" in {operation.operation_id for operation in operations}
    return operations


@dataclass
class Offline:
    """A page whose requests for anything but 127.0.0.1 are refused, and counted, as are its
    script errors."""

    page: "Page"
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.route("**/*", self.only_loopback)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def only_loopback(self, route: "Route") -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.refused.append(route.request.url)
            route.abort("blockedbyclient")


@pytest.fixture
def offline(browser: "Browser") -> Iterator[Offline]:
    context = browser.new_context()
    yield Offline(context.new_page())
    context.close()


def drawn(offline: Offline, selector: str, count: int, read: str) -> list[list[Any]]:
    """Once the page shows `count` elements matching `selector`: what `read`, a JavaScript
    function of the list of them, reads of each."""
    from playwright.sync_api import expect

    elements = offline.page.locator(selector)
    expect(elements).to_have_count(count, timeout=DRAWN_MS)
    return [list(row) for row in elements.evaluate_all(read)]


def test_swagger_ui_shows_every_operation_with_no_network(offline: Offline, served: Served) -> None:
    operations = documented(served.port)
    offline.page.goto(f"http://127.0.0.1:{served.port}/docs")
    shown = drawn(
        offline,
        "#swagger-ui .opblock",
        len(operations),
        """blocks => blocks.map(block => [
            block.id,
            block.querySelector('.opblock-summary-method').innerText,
            block.querySelector('.opblock-summary-path').dataset.path,
            block.querySelector('.opblock-summary-description').innerText,
        ])""",
    )
    expected = [
        [f"operations-{op.tag}-{op.operation_id}", op.method, op.path, op.summary]
        for op in operations
    ]
    assert sorted(shown) == sorted(expected)
    assert offline.page.title() == "contactbase - Swagger UI"
    assert (offline.refused, offline.errors) == ([], [])


def test_redoc_shows_every_operation_with_no_network(offline: Offline, served: Served) -> None:
    operations = documented(served.port)
    offline.page.goto(f"http://127.0.0.1:{served.port}/redoc")
    sections = drawn(
        offline,
        "[data-section-id^='operation/']",
        len(operations),
        """sections => sections.map(section => [
            section.dataset.sectionId,
            section.querySelector('.http-verb').innerText.toUpperCase(),
            section.querySelector('h2').innerText,
            section.innerText,
        ])""",
    )
    shown = {section_id: (method, heading, text) for section_id, method, heading, text in sections}
    assert sorted(shown) == sorted(f"operation/{op.operation_id}" for op in operations)
    for op in operations:
        method, heading, text = shown[f"operation/{op.operation_id}"]
        assert (method, heading) == (op.method, op.summary), op
        assert op.path in text, op
    assert offline.page.title() == "contactbase - ReDoc"
    assert set(offline.refused) <= {REDOC_LOGO}
    assert offline.errors == []

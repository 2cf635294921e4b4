"""`make openapi-check`: the OpenAPI document as client generators meet it (SPEC 6.9).

Serves a fresh SQLite database from a temporary directory (a Space and a key with every
permission made through the `contactbase` command), then:

1. saves the /openapi.json it serves;
2. lints it with Redocly's CLI (`npx`, a pinned version; the recommended rules): no error
   allowed, warnings printed;
3. generates a client with openapi-python-client (a pinned version, in a virtualenv of its own
   under .venv/, since its typer bound conflicts with ours), with no warning allowed;
4. drives every operation through that client against the server: create (and its replay, its
   409), batch, get, list with a filter, update (and its 422 naming the owner of an email), the
   change feed, an export created, polled until completed and downloaded (gzip bytes), delete,
   and the operators' endpoints; every answer must be of the documented status and model, and
   carry X-Request-Id (and the rate-limit headers, from the limit step on).

Exits non-zero, saying why, on the first failure. Needs Node.js (npx) and the registries.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "reliability"))
from served import NotReady, free_port, stop, wait_until_ready  # noqa: E402  (shared with fuzz.py)

REDOCLY = "@redocly/cli@2.77.0"
GENERATOR_VERSION = "0.29.1"
# openapi-python-client and everything it installs, pinned (its own virtualenv).
GENERATOR_REQUIREMENTS = (
    f"openapi-python-client=={GENERATOR_VERSION}",
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "attrs==26.1.0",
    "certifi==2026.10.19.post1",
    "h11==0.16.0",
    "httpcore==1.0.9",
    "httpx==0.28.1",
    "idna==3.20",
    "Jinja2==3.1.6",
    "markdown-it-py==4.3.0",
    "MarkupSafe==3.0.4",
    "mdurl==0.1.2",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "Pygments==2.21.0",
    "rich==15.0.0",
    "ruamel.yaml==0.19.1",
    "ruff==0.17.6",
    "shellingham==1.5.4",
    "typer==0.27.3",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
)
# The generated code is used as generated: no formatter run over it.
GENERATOR_CONFIG = "post_hooks: []\n"
PACKAGE = "contactbase_client"
API = "/public-api/v1"
# Refused before the limit step (SPEC 2): no rate-limit headers on these.
BEFORE_LIMIT = {401, 403, 413, 431}
PERMISSIONS = ("contacts:read", "contacts:write", "contacts:delete")
GZIP_MAGIC = b"\x1f\x8b"


class CheckFailed(Exception):
    """What went wrong, said once, at the end."""


def step(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def contactbase(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run one `contactbase` command with --json and return the JSON value it printed."""
    command = [sys.executable, "-m", "contactbase", *args, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"contactbase {' '.join(args)} failed: {done.stderr.strip()}")
    value: dict[str, Any] = json.loads(done.stdout)
    return value


def lint(document: Path) -> None:
    """Redocly's recommended rules: no error; the warnings are printed."""
    if shutil.which("npx") is None:
        raise CheckFailed("npx is not on PATH: install Node.js (20 or later)")
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}
    command = ["npx", "--yes", REDOCLY, "lint", "--extends=recommended", "--format=json"]
    done = subprocess.run(
        [*command, str(document)], env=env, capture_output=True, text=True, check=False
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        failure = f"redocly did not report (status {done.returncode}):\n{done.stderr}"
        raise CheckFailed(failure) from None
    for problem in report["problems"]:
        where = problem["location"][0]["pointer"] if problem["location"] else ""
        print(f"  {problem['severity']}: {problem['ruleId']}: {problem['message']} {where}")
    totals = report["totals"]
    print(f"redocly {report['version']}: {totals['errors']} errors, {totals['warnings']} warnings")
    expect(totals["errors"] == 0, "redocly lint found errors")


def generator() -> Path:
    """The openapi-python-client command, installed once into a virtualenv of its own."""
    home = Path(sys.prefix) / f"openapi-python-client-{GENERATOR_VERSION}"
    command = home / "bin" / "openapi-python-client"
    if not (home / ".installed").exists():
        print(f"installing openapi-python-client {GENERATOR_VERSION} into {home}")
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        pip = [str(home / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", *GENERATOR_REQUIREMENTS], check=True)
        checked = subprocess.run(
            [str(home / "bin" / "pip"), "check"], capture_output=True, text=True, check=False
        )
        expect(checked.returncode == 0, f"the generator's pins conflict:\n{checked.stdout}")
        (home / ".installed").touch()
    return command


def generate(document: Path, work: Path) -> Path:
    """Generate the client; any warning of the generator (an operation or a type it skipped)
    is a failure. Returns the folder that holds the package."""
    config = work / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    output = work / "client"
    command = [
        str(generator()),
        "generate",
        "--path",
        str(document),
        "--output-path",
        str(output),
        "--config",
        str(config),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    said = (done.stdout + done.stderr).strip()
    print(said)
    expect(done.returncode == 0, f"openapi-python-client failed (status {done.returncode})")
    expect("Warning" not in said, "openapi-python-client warned: part of the API is missing")
    expect((output / PACKAGE).is_dir(), f"no {PACKAGE} package in {output}")
    return output


def header_check(response: httpx.Response) -> None:
    """What every answer carries: X-Request-Id; from the limit step on, the rate limit."""
    request = response.request
    label = f"{request.method} {request.url.path} → {response.status_code}"
    expect("x-request-id" in response.headers, f"{label}: no X-Request-Id")
    secured = "authorization" in request.headers and request.url.path.startswith(API)
    if secured and response.status_code not in BEFORE_LIMIT:
        for name in ("x-ratelimit-limit", "x-ratelimit-remaining"):
            expect(name in response.headers, f"{label}: no {name}")
    if response.status_code == 429:
        expect("retry-after" in response.headers, f"{label}: no Retry-After")


def drive(base_url: str, key: str, client_dir: Path) -> None:
    """Every operation through the generated client, each answer parsed into its model."""
    sys.path.insert(0, str(client_dir))
    from contactbase_client import AuthenticatedClient, Client
    from contactbase_client.api.contacts import (
        batch_upsert_contacts,
        create_contact,
        create_export,
        delete_contact,
        download_export,
        get_contact,
        get_export,
        list_contact_changes,
        list_contacts,
        update_contact,
    )
    from contactbase_client.api.operations import healthz, metrics, readyz
    from contactbase_client.models import (
        BatchItemDone,
        BatchRequest,
        BatchResult,
        ChangePage,
        ConflictBody,
        ContactCreate,
        ContactDetail,
        ContactPage,
        ContactUpdate,
        ContactUpdated,
        CreateContactOnConflict,
        CustomFields,
        CustomFieldValues,
        ErrorBody,
        ExportRequest,
        ExportStatus,
        ExportStatusStatus,
        ValidationErrorBody,
    )
    from contactbase_client.types import File, Response

    hooks = {"event_hooks": {"response": [header_check]}}
    authed = AuthenticatedClient(
        base_url=base_url, token=key, raise_on_unexpected_status=True, httpx_args=hooks
    )
    anonymous = Client(base_url=base_url, raise_on_unexpected_status=True, httpx_args=hooks)

    def answered(what: str, response: Response[Any], status: int, model: type) -> Any:
        parsed = response.parsed
        expect(
            response.status_code == status,
            f"{what}: status {response.status_code}, not {status}: {response.content[:300]!r}",
        )
        expect(isinstance(parsed, model), f"{what}: parsed as {type(parsed)}, not {model}")
        print(f"  {what}: {status} {model.__name__}")
        return parsed

    def timestamp(what: str, value: object) -> None:
        ok = isinstance(value, datetime) and value.tzinfo is not None
        expect(ok, f"{what}: {value!r} is not an aware datetime")

    # Create, with custom fields of each type and an Idempotency-Key; then its replay.
    slots = CustomFields(profile_field_1="VIP", profile_field_16=3.5, profile_field_26="2026-11-26")
    ada = ContactCreate(emails=["ada@example.com"], names=["Ada"], custom_fields=slots)
    created = create_contact.sync_detailed(client=authed, body=ada, idempotency_key="ada-1")
    contact = answered("createContact", created, 201, ContactDetail)
    timestamp("createContact created_at", contact.created_at)
    expect(isinstance(contact.custom_fields, CustomFieldValues), "custom_fields untyped")
    expect(contact.custom_fields.profile_field_16 == 3.5, "profile_field_16 not 3.5")
    replayed = create_contact.sync_detailed(client=authed, body=ada, idempotency_key="ada-1")
    answered("createContact (replayed)", replayed, 201, ContactDetail)
    expect(replayed.headers.get("idempotent-replayed") == "true", "no Idempotent-Replayed")
    conflict = create_contact.sync_detailed(
        client=authed, body=ada, on_conflict=CreateContactOnConflict.ERROR
    )
    refused = answered("createContact (on_conflict=error)", conflict, 409, ConflictBody)
    expect(refused.existing_contact_id == contact.id, "409 without existing_contact_id")

    # A batch of two.
    batch = BatchRequest(
        contacts=[
            ContactCreate(emails=["bob@example.com"]),
            ContactCreate(emails=["cy@example.com"]),
        ]
    )
    result = answered(
        "batchUpsertContacts",
        batch_upsert_contacts.sync_detailed(client=authed, body=batch),
        200,
        BatchResult,
    )
    expect(result.created == 2, f"batch created {result.created}, not 2")
    done_items = [item for item in result.results if isinstance(item, BatchItemDone)]
    expect(len(done_items) == 2, "batch results are not BatchItemDone")
    bob_id = done_items[0].contact.id

    # Get, and list with a filter.
    got = answered(
        "getContact",
        get_contact.sync_detailed(str(contact.id), client=authed),
        200,
        ContactDetail,
    )
    timestamp("getContact updated_at", got.updated_at)
    page = answered(
        "listContacts (email filter)",
        list_contacts.sync_detailed(
            client=authed, email="ada@example.com", include_custom_fields=True
        ),
        200,
        ContactPage,
    )
    expect([item.id for item in page.data] == [contact.id], "the filter did not find Ada alone")
    shown = page.data[0].custom_fields
    expect(isinstance(shown, CustomFieldValues), "the list's custom_fields are untyped")
    expect(shown.profile_field_1 == "VIP" and shown.profile_field_2 is None, "slots not shown")
    expect(shown.profile_field_26 == "2026-11-26", "date slot not shown")

    # Update, and an update refused for an email of another contact.
    change = ContactUpdate(names=["Ada L."], custom_fields=CustomFields(profile_field_2="new"))
    updated = answered(
        "updateContact",
        update_contact.sync_detailed(str(contact.id), client=authed, body=change),
        200,
        ContactUpdated,
    )
    expect(updated.names == ["Ada L."], "update did not answer the names sent")
    taken = ContactUpdate(emails=["bob@example.com"])
    owned = answered(
        "updateContact (email of another)",
        update_contact.sync_detailed(str(contact.id), client=authed, body=taken),
        422,
        ValidationErrorBody,
    )
    expect(owned.existing_contact_id == bob_id, "PUT 422 without existing_contact_id")

    # The change feed.
    feed = answered(
        "listContactChanges",
        list_contact_changes.sync_detailed(client=authed, after=0),
        200,
        ChangePage,
    )
    expect(len(feed.data) >= 4, f"{len(feed.data)} events, expected the creates and the update")
    timestamp("listContactChanges occurred_at", feed.data[0].occurred_at)

    # An export: created, polled until completed, downloaded.
    window = ExportRequest(start_date="2000-01-01 00:00:00", end_date="2100-01-01 00:00:00")
    queued = answered(
        "createExport",
        create_export.sync_detailed(client=authed, body=window),
        202,
        ExportStatus,
    )
    deadline = time.monotonic() + 60
    while True:
        polled = get_export.sync_detailed(queued.export_id, client=authed)
        if polled.status_code == 429:  # the get limit: wait as told
            time.sleep(int(polled.headers["retry-after"]))
            continue
        status = answered("getExport", polled, 200, ExportStatus)
        if status.status == ExportStatusStatus.COMPLETED:
            break
        expect(status.status != ExportStatusStatus.FAILED, f"export failed: {status.message}")
        expect(time.monotonic() < deadline, "export not completed within 60 s")
        time.sleep(0.3)
    timestamp("getExport completed_at", status.completed_at)
    timestamp("getExport expires_at", status.expires_at)
    link = urlsplit(status.download_url)
    signed = {name: values[0] for name, values in parse_qs(link.query).items()}
    download = answered(
        "downloadExport",
        download_export.sync_detailed(
            queued.export_id,
            client=anonymous,
            expires=int(signed["expires"]),
            signature=signed["signature"],
        ),
        200,
        File,
    )
    data = download.payload.read()
    expect(data[:2] == GZIP_MAGIC, f"the download is not gzip: {data[:16]!r}")
    lines = gzip.decompress(data).decode().splitlines()
    emails = sorted(json.loads(line)["email"] for line in lines)
    expected = ["ada@example.com", "bob@example.com", "cy@example.com"]
    expect(emails == expected, f"the export holds {emails}, not {expected}")
    print(f"  downloadExport: {len(data)} gzip bytes, {len(lines)} contacts")

    # Delete; the id is then unknown.
    answered(
        "deleteContact",
        delete_contact.sync_detailed(str(bob_id), client=authed),
        204,
        type(None),
    )
    answered(
        "getContact (deleted)",
        get_contact.sync_detailed(str(bob_id), client=authed),
        404,
        ErrorBody,
    )

    # The operators' endpoints, which need no key.
    checks: list[tuple[str, Callable[..., Response[Any]], type]] = [
        ("healthz", healthz.sync_detailed, object),
        ("readyz", readyz.sync_detailed, object),
        ("metrics", metrics.sync_detailed, type(None)),
    ]
    for name, call, model in checks:
        answered(name, call(client=anonymous), 200, model)


def main() -> int:
    """Serve, lint, generate, drive; 1 on the first failure."""
    with tempfile.TemporaryDirectory(prefix="contactbase-openapi-") as directory:
        work = Path(directory)
        env = {
            **os.environ,
            "CONTACTBASE_DATABASE_URL": f"sqlite:///{work / 'contactbase.db'}",
            "CONTACTBASE_EXPORT_DIR": str(work / "exports"),
            "CONTACTBASE_EXPORT_POLL_SECONDS": "0.2",
        }
        for name in ("CONTACTBASE_REDIS_URL", "CONTACTBASE_PUBLIC_URL"):
            env.pop(name, None)
        server: subprocess.Popen[bytes] | None = None
        log_path = work / "server.log"
        try:
            step("a fresh server")
            contactbase(env, "migrate")
            space_id = str(contactbase(env, "space", "create", "OpenAPI check")["id"])
            granted = [arg for permission in PERMISSIONS for arg in ("--permission", permission)]
            key = str(contactbase(env, "key", "create", space_id, *granted)["key"])
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            serve = [sys.executable, "-m", "contactbase", "serve", "--port", str(port), "--json"]
            with log_path.open("wb") as log:
                server = subprocess.Popen(serve, env=env, stdout=log, stderr=subprocess.STDOUT)
            wait_until_ready(base_url, server)
            document = work / "openapi.json"
            document.write_bytes(httpx.get(f"{base_url}/openapi.json").raise_for_status().content)
            print(f"serving on {base_url}; the document is {document.stat().st_size} bytes")

            step(f"redocly lint ({REDOCLY})")
            lint(document)

            step(f"openapi-python-client {GENERATOR_VERSION}")
            client_dir = generate(document, work)

            step("every operation through the generated client")
            drive(base_url, key, client_dir)
        except Exception as failure:
            if log_path.exists():
                print(f"\nserver log (its end):\n{log_path.read_text(errors='replace')[-4000:]}")
            if not isinstance(failure, CheckFailed | NotReady):
                raise
            print(f"\nFAILED: {failure}", file=sys.stderr)
            return 1
        finally:
            if server is not None:
                stop(server)
    print("\nOpenAPI check passed: lint, generation and every operation.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

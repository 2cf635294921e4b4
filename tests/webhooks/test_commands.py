"""`contactbase webhook …`, run in process against the test database: every command with
--json, its refusals one line each, and nothing half-created."""

import asyncio
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import Result

from contactbase.db import Database
from contactbase.webhooks.models import WebhookEndpoint
from contactbase.webhooks.worker import WebhookWorker
from tests.factories import add_contact, bearer, make_key, make_space
from tests.test_cli import Cli, error_line
from tests.webhooks.receivers import Receiver, settle

SECRET = re.compile(r"whsec_[A-Za-z0-9+/]{43}=")
ENDPOINT_KEYS = {
    "id",
    "space_id",
    "url",
    "events",
    "enabled",
    "disabled_reason",
    "previous_secret_until",
    "created_at",
}


@pytest.fixture
def cli(database_url: str, db: Database) -> Cli:
    """The command on the test database, receivers on 127.0.0.1 allowed."""
    command = Cli(database_url)
    command.env["CONTACTBASE_WEBHOOK_ALLOW_PRIVATE"] = "true"
    return command


async def plain(cli: Cli, *args: str) -> Result:
    """A command without --json, in a thread: it runs an event loop of its own."""
    return await asyncio.to_thread(cli, *args)


async def endpoints(db: Database) -> int:
    async with db.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0)


async def test_create_prints_the_secret_once_and_list_never(
    cli: Cli, db: Database, receiver: Receiver
) -> None:
    space_id = await make_space(db)
    made = await cli.in_thread("webhook", "create", str(space_id), receiver.url())
    assert set(made) == ENDPOINT_KEYS | {"secret"}
    assert SECRET.fullmatch(made["secret"])
    assert made["events"] == [
        "contact.created",
        "contact.updated",
        "contact.merged",
        "contact.erased",
    ]
    assert made["enabled"] is True
    listed = await cli.in_thread("webhook", "list", str(space_id))
    assert listed == [{key: made[key] for key in ENDPOINT_KEYS}]
    erasures = receiver.url("/erasures")
    space = str(space_id)
    shown = await plain(cli, "webhook", "create", space, erasures, "--event", "contact.erased")
    assert shown.exit_code == 0, shown.output
    assert "whsec_" in shown.stdout
    assert "not shown again" in shown.stdout


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/hook", "must start with http:// or https://"),
        ("not a url", "URL"),
        ("http://user:pass@example.com/", "password"),
    ],
)
async def test_a_bad_url_is_one_line_and_creates_nothing(
    cli: Cli, db: Database, url: str, says: str
) -> None:
    space_id = await make_space(db)
    line = error_line(await plain(cli, "webhook", "create", str(space_id), url))
    assert line.startswith("error: ")
    assert says in line
    assert await endpoints(db) == 0


async def test_loopback_is_refused_unless_allowed(
    cli: Cli, db: Database, receiver: Receiver
) -> None:
    space_id = await make_space(db)
    cli.env["CONTACTBASE_WEBHOOK_ALLOW_PRIVATE"] = "false"
    line = error_line(await plain(cli, "webhook", "create", str(space_id), receiver.url()))
    assert "127.0.0.1" in line
    assert "loopback" in line
    assert "CONTACTBASE_WEBHOOK_ALLOW_PRIVATE" in line
    as_json = await plain(cli, "webhook", "create", str(space_id), receiver.url(), "--json")
    assert as_json.stdout == ""  # SPEC 6.9: with --json too, the error is one line on stderr
    assert error_line(as_json) == line
    assert await endpoints(db) == 0


async def test_an_unknown_event_type_or_space_is_one_line(
    cli: Cli, db: Database, receiver: Receiver
) -> None:
    space_id = await make_space(db)
    url = receiver.url()
    wrong = await plain(cli, "webhook", "create", str(space_id), url, "--event", "contact.deleted")
    line = error_line(wrong)
    assert "contact.deleted" in line
    assert "contact.erased" in line  # the types there are
    nowhere = await plain(cli, "webhook", "create", "999", url)
    assert "No Space with id 999" in error_line(nowhere)
    unknown = await plain(cli, "webhook", "disable", "5")
    assert "No webhook endpoint with id 5" in error_line(unknown)
    assert await endpoints(db) == 0


async def test_disable_enable_rotate_delete(cli: Cli, db: Database, receiver: Receiver) -> None:
    space_id = await make_space(db)
    made = await cli.in_thread("webhook", "create", str(space_id), receiver.url())
    number = str(made["id"])
    disabled = await cli.in_thread("webhook", "disable", number)
    assert (disabled["enabled"], disabled["disabled_reason"]) == (
        False,
        "disabled with `contactbase webhook disable`",
    )
    enabled = await cli.in_thread("webhook", "enable", number)
    assert (enabled["enabled"], enabled["disabled_reason"]) == (True, None)
    rotated = await cli.in_thread("webhook", "rotate-secret", number)
    assert SECRET.fullmatch(rotated["secret"])
    assert rotated["secret"] != made["secret"]
    assert rotated["previous_secret_until"] is not None
    deleted = await cli.in_thread("webhook", "delete", number)
    assert deleted["id"] == made["id"]
    assert await cli.in_thread("webhook", "list", str(space_id)) == []


async def test_deliveries_and_replay(
    cli: Cli,
    db: Database,
    client: httpx.AsyncClient,
    worker: WebhookWorker,
    receiver: Receiver,
) -> None:
    space_id = await make_space(db)
    auth = bearer(await make_key(db, space_id))
    made = await cli.in_thread("webhook", "create", str(space_id), receiver.url())
    number = str(made["id"])
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    await add_contact(client, auth, {"emails": ["bob@example.com"]})
    await settle(worker)
    attempts: list[dict[str, Any]] = await cli.in_thread("webhook", "deliveries", number)
    # Newest first; two attempts made at once may be recorded in either order.
    assert sorted((a["event_seq"], a["attempt"], a["status"]) for a in attempts) == [
        (1, 1, 200),
        (2, 1, 200),
    ]
    assert set(attempts[0]) >= {"event_seq", "attempt", "status", "latency_ms", "response", "at"}
    replayed = await cli.in_thread("webhook", "replay", number, "--after", "0")
    assert replayed == {"endpoint_id": made["id"], "queued": 2}
    await settle(worker)
    assert len(receiver.at("/hook")) == 4
    assert len(await cli.in_thread("webhook", "deliveries", number, "--limit", "3")) == 3

"""The `contactbase` command, run in process against the test database."""

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from contactbase import __version__
from contactbase.cli import app
from contactbase.db import Database
from contactbase.migrations import schema_head
from contactbase.ratelimit import DEFAULT_LIMITS
from tests.factories import CONTACTS, SEED, answered, bearer

SPACE_KEYS = {
    "id",
    "name",
    "status",
    "timezone",
    "rate_limits",
    "custom_field_labels",
    "created_at",
}
KEY_KEYS = {"id", "space_id", "name", "prefix", "permissions", "created_at", "key"}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
KEY = re.compile(r"cb_[A-Za-z0-9_-]{43,}")

runner = CliRunner()


class Cli:
    def __init__(self, database_url: str) -> None:
        self.env: dict[str, str | None] = {
            "CONTACTBASE_DATABASE_URL": database_url,
            "CONTACTBASE_REDIS_URL": None,
        }

    def __call__(self, *args: str) -> Result:
        return runner.invoke(app, list(args), env=self.env)

    def json(self, *args: str) -> Any:
        """Run with --json; it must succeed and print exactly one JSON value."""
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    async def in_thread(self, *args: str) -> Any:
        """For async tests: the command runs its own event loop, so not on the test's."""
        return await asyncio.to_thread(self.json, *args)


@pytest.fixture
def cli(database_url: str, db: Database) -> Cli:
    """The command, on the test database (emptied by `db`), without Redis."""
    return Cli(database_url)


def error_line(result: Result, status: int = 1) -> str:
    """The error a command printed: one line on standard error, however long."""
    assert result.exit_code == status, result.output
    line, end, rest = result.stderr.partition("\n")
    assert (end, rest) == ("\n", ""), result.stderr
    return line


def json_error_line(result: Result) -> str:
    """The error a command printed with --json (SPEC 6.9): the same line, nothing on standard
    output."""
    assert result.stdout == ""
    return error_line(result)


def test_space_create_prints_one_json_value(cli: Cli) -> None:
    space = cli.json("space", "create", "Acme", "--timezone", "Europe/Paris")
    assert set(space) == SPACE_KEYS
    assert space == {
        "id": 1,
        "name": "Acme",
        "status": "active",
        "timezone": "Europe/Paris",
        "rate_limits": DEFAULT_LIMITS,
        "custom_field_labels": {},
        "created_at": space["created_at"],
    }
    assert TIMESTAMP.fullmatch(space["created_at"])


def test_space_create_defaults_to_utc(cli: Cli) -> None:
    assert cli.json("space", "create", "Acme")["timezone"] == "UTC"


def test_space_create_without_json_prints_a_table(cli: Cli) -> None:
    result = cli("space", "create", "Table Space")
    assert result.exit_code == 0
    assert "Table Space" in result.stdout
    assert "active" in result.stdout


def test_space_create_refuses_a_bad_timezone(cli: Cli) -> None:
    result = cli("space", "create", "Acme", "--timezone", "Mars/Olympus")
    assert result.exit_code == 1
    assert "Mars/Olympus" in error_line(result)
    as_json = cli("space", "create", "Acme", "--timezone", "Mars/Olympus", "--json")
    assert json_error_line(as_json) == error_line(result)
    assert cli.json("space", "list") == []


def test_space_list_show_activate_deactivate(cli: Cli) -> None:
    first = cli.json("space", "create", "First")
    second = cli.json("space", "create", "Second", "--timezone", "America/New_York")
    assert cli.json("space", "list") == [first, second]
    assert cli.json("space", "show", str(second["id"])) == second
    deactivated = cli.json("space", "deactivate", str(first["id"]))
    assert deactivated == {**first, "status": "inactive"}
    assert cli.json("space", "show", str(first["id"]))["status"] == "inactive"
    assert cli.json("space", "activate", str(first["id"])) == first
    assert cli.json("space", "list") == [first, second]


def test_space_list_without_json(cli: Cli) -> None:
    empty = cli("space", "list")
    assert empty.exit_code == 0
    assert "No spaces." in empty.stdout
    cli.json("space", "create", "Listed")
    listed = cli("space", "list")
    assert listed.exit_code == 0
    assert "Listed" in listed.stdout


@pytest.mark.parametrize("command", ["show", "activate", "deactivate"])
def test_unknown_space_fails(cli: Cli, command: str) -> None:
    result = cli("space", command, "999")
    assert error_line(result) == "error: No Space with id 999."
    assert json_error_line(cli("space", command, "999", "--json")) == "error: No Space with id 999."


def test_space_set_limit(cli: Cli) -> None:
    space = cli.json("space", "create", "Acme")
    changed = cli.json("space", "set-limit", str(space["id"]), "create", "120")
    assert changed["rate_limits"] == {**DEFAULT_LIMITS, "create": 120}
    assert cli.json("space", "show", str(space["id"]))["rate_limits"] == {
        **DEFAULT_LIMITS,
        "create": 120,
    }
    lowered = cli.json("space", "set-limit", str(space["id"]), "list", "1")
    assert lowered["rate_limits"] == {**DEFAULT_LIMITS, "create": 120, "list": 1}


def test_space_set_limit_refuses_an_unknown_endpoint(cli: Cli) -> None:
    space = cli.json("space", "create", "Acme")
    result = cli("space", "set-limit", str(space["id"]), "erase", "10")
    assert result.exit_code == 1
    assert "create, get, list, update, export, batch, delete" in error_line(result)
    assert cli.json("space", "show", str(space["id"]))["rate_limits"] == DEFAULT_LIMITS


@pytest.mark.parametrize("per_minute", ["0", "-1"])
def test_space_set_limit_refuses_a_limit_under_one(cli: Cli, per_minute: str) -> None:
    """A 429's Retry-After promises a retry that succeeds (SPEC 2): under a limit of 0 none
    would."""
    space = cli.json("space", "create", "Acme")
    result = cli("space", "set-limit", str(space["id"]), "create", "--", per_minute)
    line = error_line(result)
    assert line.startswith(
        f"error: The limit must be 1 or more requests per minute, not {per_minute}"
    )
    assert "the smallest allowed is 1" in line
    assert cli.json("space", "show", str(space["id"]))["rate_limits"] == DEFAULT_LIMITS


def test_a_long_error_is_one_line_as_it_is(cli: Cli, work_dir: Path) -> None:
    """Without a terminal rich wraps what it prints at 80 columns, and it reads `[/x]` and
    `:name:` as markup: an error is one line on standard error, its message as it is."""
    cli.env["COLUMNS"] = "80"
    space = str(cli.json("space", "create", "Acme")["id"])
    missing = work_dir / ("a-long-directory-name-" * 3) / "[/people] :thumbs_up:.csv"
    zone = "Mars/[/Olympus]:thumbs_up:" + "_" * 60
    for args, quoted in (
        (["space", "create", "Acme", "--timezone", zone], zone),
        (["key", "create", space, "--permission", "contacts:destroy"], "contacts:destroy"),
        (["import", space, str(missing)], str(missing)),
    ):
        result = cli(*args)
        line = error_line(result)
        assert len(line) > 80
        assert quoted in line
        assert json_error_line(cli(*args, "--json")) == line
        assert isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output


async def test_key_create_makes_a_working_key(cli: Cli, client: httpx.AsyncClient) -> None:
    space = await cli.in_thread("space", "create", "Acme")
    key = await cli.in_thread(
        "key", "create", str(space["id"]), "--name", "reader", "--permission", "contacts:read"
    )
    assert set(key) == KEY_KEYS
    assert key == {
        "id": 1,
        "space_id": space["id"],
        "name": "reader",
        "prefix": key["key"][:11],
        "permissions": ["contacts:read"],
        "created_at": key["created_at"],
        "key": key["key"],
    }
    assert KEY.fullmatch(key["key"])
    assert TIMESTAMP.fullmatch(key["created_at"])
    listed = await client.get(CONTACTS, headers=bearer(key["key"]))
    assert listed.status_code == 200
    refused = await client.post(CONTACTS, json=SEED, headers=bearer(key["key"]))
    assert refused.status_code == 403
    assert "contacts:write" in refused.json()["message"]


async def test_key_create_defaults_to_both_permissions(cli: Cli, client: httpx.AsyncClient) -> None:
    space = await cli.in_thread("space", "create", "Acme")
    key = await cli.in_thread("key", "create", str(space["id"]))
    assert key["permissions"] == ["contacts:read", "contacts:write"]
    assert key["name"] is None
    created = await client.post(CONTACTS, json=SEED, headers=bearer(key["key"]))
    assert created.status_code == 201


def test_key_create_refuses_an_unknown_permission(cli: Cli) -> None:
    space = cli.json("space", "create", "Acme")
    result = cli("key", "create", str(space["id"]), "--permission", "contacts:destroy")
    assert result.exit_code == 1
    assert "contacts:destroy" in error_line(result)
    assert cli.json("key", "list", str(space["id"])) == []


def test_key_create_for_an_unknown_space_fails(cli: Cli) -> None:
    result = cli("key", "create", "999")
    assert error_line(result) == "error: No Space with id 999."
    assert "cb_" not in result.output
    assert json_error_line(cli("key", "create", "999", "--json")) == "error: No Space with id 999."


def test_key_create_without_json_shows_the_key_once(cli: Cli) -> None:
    space = cli.json("space", "create", "Acme")
    result = cli("key", "create", str(space["id"]))
    assert result.exit_code == 0
    # The only time the key is ever shown: it must be printed whole, never cut to fit a table.
    assert KEY.search(result.stdout), result.stdout
    assert "cannot be shown again" in result.stdout


def test_key_list_never_shows_the_full_key(cli: Cli) -> None:
    space = cli.json("space", "create", "Acme")
    first = cli.json("key", "create", str(space["id"]), "--name", "one")
    second = cli.json("key", "create", str(space["id"]), "--name", "two")
    listed = cli.json("key", "list", str(space["id"]))
    assert [item["id"] for item in listed] == [first["id"], second["id"]]
    assert [item["prefix"] for item in listed] == [first["prefix"], second["prefix"]]
    assert [item["revoked_at"] for item in listed] == [None, None]
    for item in listed:
        assert "key" not in item
    table = cli("key", "list", str(space["id"]))
    assert table.exit_code == 0
    for output in (json.dumps(listed), table.output):
        assert first["key"] not in output
        assert second["key"] not in output
        assert not KEY.search(output)


def test_key_list_for_an_unknown_space_fails(cli: Cli) -> None:
    result = cli("key", "list", "999")
    assert result.exit_code == 1
    assert "No Space with id 999." in error_line(result)


async def test_key_revoke_applies_to_the_next_request(cli: Cli, client: httpx.AsyncClient) -> None:
    space = await cli.in_thread("space", "create", "Acme")
    key = await cli.in_thread("key", "create", str(space["id"]))
    auth = bearer(key["key"])
    assert (await client.get(CONTACTS, headers=auth)).status_code == 200
    revoked = await cli.in_thread("key", "revoke", str(key["id"]))
    assert revoked["id"] == key["id"]
    assert TIMESTAMP.fullmatch(revoked["revoked_at"])
    response = await client.get(CONTACTS, headers=auth)
    assert response.status_code == 401
    assert answered(response) == {"message": "Unauthenticated."}


async def test_space_deactivate_applies_to_the_next_request(
    cli: Cli, client: httpx.AsyncClient
) -> None:
    space = await cli.in_thread("space", "create", "Acme")
    auth = bearer((await cli.in_thread("key", "create", str(space["id"])))["key"])
    assert (await client.get(CONTACTS, headers=auth)).status_code == 200
    await cli.in_thread("space", "deactivate", str(space["id"]))
    refused = await client.get(CONTACTS, headers=auth)
    assert refused.status_code == 403
    assert "subscription is inactive" in refused.json()["message"]
    await cli.in_thread("space", "activate", str(space["id"]))
    assert (await client.get(CONTACTS, headers=auth)).status_code == 200


def test_key_revoke_of_an_unknown_key_fails(cli: Cli) -> None:
    result = cli("key", "revoke", "999")
    assert result.exit_code == 1
    assert "No API key with id 999." in error_line(result)


def test_serve_with_several_workers_needs_redis(cli: Cli) -> None:
    line = error_line(cli("serve", "--workers", "2"))
    assert line.startswith("error: --workers > 1 needs CONTACTBASE_REDIS_URL")


def test_serve_refusal_with_json_prints_nothing_on_standard_output(cli: Cli) -> None:
    """SPEC §4: every command accepts --json; SPEC 6.9: a failure is then one line on standard
    error, and standard output holds nothing."""
    result = cli("serve", "--workers", "2", "--json")
    assert "Redis" in json_error_line(result)


def test_migrate_at_head_with_json(cli: Cli) -> None:
    assert cli.json("migrate") == {"status": "migrated", "schema": schema_head()}


@pytest.mark.parametrize(
    ("args", "commands"),
    [
        pytest.param([], ["migrate", "space", "key", "serve", "demo", "import"], id="top"),
        pytest.param(
            ["space"], ["create", "list", "show", "activate", "deactivate", "set-limit"], id="space"
        ),
        pytest.param(["key"], ["create", "list", "revoke"], id="key"),
    ],
)
def test_help_lists_the_commands(cli: Cli, args: list[str], commands: list[str]) -> None:
    result = cli(*args, "--help")
    assert result.exit_code == 0
    listed = result.stdout.partition("\nCommands:\n")[2]
    for command in commands:
        assert re.search(rf"^  {re.escape(command)}  +\S", listed, re.MULTILINE), command
    assert cli(*args, "-h").stdout == result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["space", "list"],
        ["serve"],
        ["import"],
        ["space", "set-label"],
        ["webhook", "deliveries"],
    ],
)
def test_flags_are_shown_as_flags(cli: Cli, args: list[str]) -> None:
    """A flag takes no value: help shows `--json`, never `--json <bool>`."""
    shown = cli(*args, "-h")
    assert shown.exit_code == 0, shown.output
    assert re.search(r"^  --json  +Print one JSON value", shown.stdout, re.MULTILINE)
    assert "<bool>" not in shown.stdout


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert (result.exit_code, result.stdout) == (0, f"contactbase {__version__}\n")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["serve", "--port", "70000"], "Invalid value for '--port'"),
        (["serve", "--port", "0"], "Invalid value for '--port'"),
        (["serve", "--workers", "0"], "Invalid value for '--workers'"),
        (["serve", "--limit-concurrency", "0"], "Invalid value for '--limit-concurrency'"),
        (["import", "1", "x.csv", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["webhook", "deliveries", "1", "--limit", "0"], "Invalid value for '--limit'"),
        (["webhook", "deliveries", "1", "--limit", "1001"], "Invalid value for '--limit'"),
        (["space", "list", "--nope"], "No such option: --nope"),
    ],
)
def test_an_out_of_range_option_is_a_usage_error(cli: Cli, args: list[str], says: str) -> None:
    """Click's own answer: the usage, then one error line; status 2."""
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    usage, _hint, _blank, error, end = result.stderr.split("\n")
    assert usage.startswith("Usage: ")  # CliRunner names the program `root`
    assert error.startswith(f"Error: {says}")
    assert end == ""


def test_demo_creates_then_reuses_its_key(cli: Cli, work_dir: Path) -> None:
    key_file = work_dir / "demo-key"
    first = cli("demo", "--key-file", str(key_file))
    assert first.exit_code == 0, first.output
    match = re.search(r"Created the demo Space's API key: (\S+)", first.stdout)
    assert match
    key = match.group(1)
    assert KEY.fullmatch(key)
    assert key_file.read_text() == key + "\n"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert f"export CB=http://127.0.0.1:8000/public-api/v1 KEY={key}\n" in first.stdout
    assert 'curl -s -X POST "$CB/contacts" -H "Authorization: Bearer $KEY"' in first.stdout
    second = cli("demo", "--key-file", str(key_file), "--url", "http://127.0.0.1:8080/")
    assert second.exit_code == 0, second.output
    assert f"Using the demo Space's API key: {key}" in second.stdout
    assert f"export CB=http://127.0.0.1:8080/public-api/v1 KEY={key}\n" in second.stdout
    assert "API docs: http://127.0.0.1:8080/docs" in second.stdout
    assert [space["name"] for space in cli.json("space", "list")] == ["Demo"]
    assert len(cli.json("key", "list", "1")) == 1


def test_demo_replaces_a_revoked_key(cli: Cli, work_dir: Path) -> None:
    key_file = work_dir / "demo-key"
    assert cli("demo", "--key-file", str(key_file)).exit_code == 0
    old = key_file.read_text().strip()
    cli.json("key", "revoke", "1")
    again = cli("demo", "--key-file", str(key_file))
    assert again.exit_code == 0
    new = key_file.read_text().strip()
    assert new != old
    assert f"Created the demo Space's API key: {new}" in again.stdout


def test_a_key_may_erase_only_when_asked_for(cli: Cli) -> None:
    space = str(cli.json("space", "create", "Acme")["id"])
    assert cli.json("key", "create", space)["permissions"] == ["contacts:read", "contacts:write"]
    erasing = cli.json("key", "create", space, "--permission", "contacts:delete")
    assert erasing["permissions"] == ["contacts:delete"]


def test_labels_name_slots_uniquely_within_a_space(cli: Cli) -> None:
    space = str(cli.json("space", "create", "Acme")["id"])
    other = str(cli.json("space", "create", "Other")["id"])
    labelled = cli.json("space", "set-label", space, "profile_field_16", " Lifetime value ")
    assert labelled["custom_field_labels"] == {"profile_field_16": "Lifetime value"}
    cli.json("space", "set-label", space, "profile_field_1", "Plan")
    shown = cli.json("space", "show", space)["custom_field_labels"]
    assert shown == {"profile_field_1": "Plan", "profile_field_16": "Lifetime value"}
    taken = error_line(cli("space", "set-label", space, "profile_field_2", "Plan"))
    assert taken == "error: The label 'Plan' already names profile_field_1 in this Space."
    assert cli.json("space", "set-label", other, "profile_field_2", "Plan")["custom_field_labels"]
    relabelled = cli.json("space", "set-label", space, "profile_field_1", "Tier")
    assert relabelled["custom_field_labels"]["profile_field_1"] == "Tier"
    cleared = cli.json("space", "set-label", space, "profile_field_16", "--clear")
    assert cleared["custom_field_labels"] == {"profile_field_1": "Tier"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("profile_field_31", "X"), "profile_field_1 to profile_field_30"),
        (("profile_field_1", "profile_field_2"), "must not look like a slot's name"),
        (("profile_field_1", "   "), "1 to 100 printable characters"),
        (("profile_field_1",), "Give a LABEL, or --clear"),
        (("profile_field_1", "X", "--clear"), "Give a LABEL, or --clear"),
    ],
)
def test_a_bad_label_is_one_line(cli: Cli, args: tuple[str, ...], says: str) -> None:
    space = str(cli.json("space", "create", "Acme")["id"])
    assert says in error_line(cli("space", "set-label", space, *args))
    assert cli.json("space", "show", space)["custom_field_labels"] == {}

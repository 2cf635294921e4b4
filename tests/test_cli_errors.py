"""Every failure of `contactbase` is one line (SPEC 6.9): `error: …` on standard error, naming
the cause and the fix, status 1, nothing on standard output, also with --json; the traceback
only with CONTACTBASE_DEBUG=1. The real command, run as an operator runs it, meets what a new
user met (issue 17): a wrong setting, a database that is away, missing, empty or read-only."""

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contactbase.cli import app
from contactbase.db import async_url
from tests.test_headers import contactbase

runner = CliRunner()


@dataclass
class Case:
    env: dict[str, str]
    prefix: tuple[str, ...] = ()  # a command the CLI runs under (a read-only mount)


def operator_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of an operator's shell, in a folder of its own, with `settings`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONTACTBASE")}
    return env | {"CONTACTBASE_DATABASE_URL": f"sqlite:///{tmp_path / 'contactbase.db'}"} | settings


def failed(case: Case, *args: str, cwd: Path) -> str:
    """Run the CLI, which must fail as SPEC 6.9 says; its one line."""
    done = subprocess.run(
        [*case.prefix, sys.executable, "-m", "contactbase", *args],
        env=case.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    line, end, rest = done.stderr.partition("\n")
    assert (end, rest) == ("\n", ""), done.stderr
    assert line.startswith("error: ")
    assert "Traceback" not in done.stderr
    return line


def same_in_process(case: Case, line: str, *args: str) -> None:
    """The same line with --json (standard output left empty), and with CONTACTBASE_DEBUG=1
    the exception itself, in process (faster than a process each)."""
    # The case's settings, and none of the test run's own (None unsets a variable).
    names = {name for name in {*os.environ, *case.env} if name.startswith("CONTACTBASE")}
    env = {name: case.env.get(name) for name in names}
    as_json = runner.invoke(app, [*args, "--json"], env=env)
    assert (as_json.exit_code, as_json.stdout, as_json.stderr) == (1, "", line + "\n")
    debugged = runner.invoke(app, list(args), env={**env, "CONTACTBASE_DEBUG": "1"})
    assert debugged.exit_code == 1
    assert not isinstance(debugged.exception, SystemExit), debugged.output
    assert "error: " not in debugged.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    env = operator_env(tmp_path, CONTACTBASE_MAX_BODY_BYTES="abc", CONTACTBASE_DEBUG="1")
    done = subprocess.run(
        [sys.executable, "-m", "contactbase", "space", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback (most recent call last):\n")
    assert "pydantic_core._pydantic_core.ValidationError: 1 validation error for Settings" in (
        done.stderr
    )
    assert "error: " not in done.stderr


def test_an_unsupported_database_url(tmp_path: Path) -> None:
    url = "mysql://root:hunter2@db.example.com/contacts"
    case = Case(operator_env(tmp_path, CONTACTBASE_DATABASE_URL=url))
    line = failed(case, "space", "list", cwd=tmp_path)
    assert line == (
        "error: CONTACTBASE_DATABASE_URL must be sqlite:///… or postgresql://… "
        '("mysql://root:***@db.example.com/contacts").'
    )
    same_in_process(case, line, "space", "list")


def test_a_body_limit_that_is_not_a_number(tmp_path: Path) -> None:
    case = Case(operator_env(tmp_path, CONTACTBASE_MAX_BODY_BYTES="abc"))
    line = failed(case, "space", "list", cwd=tmp_path)
    assert line == 'error: CONTACTBASE_MAX_BODY_BYTES must be an integer ("abc").'
    same_in_process(case, line, "space", "list")


def test_a_redis_url_that_is_not_redis(tmp_path: Path) -> None:
    case = Case(operator_env(tmp_path, CONTACTBASE_REDIS_URL="http://cache.example.com"))
    line = failed(case, "serve", cwd=tmp_path)
    assert line == (
        "error: CONTACTBASE_REDIS_URL must be redis://…, rediss://… or unix://… "
        '("http://cache.example.com").'
    )
    same_in_process(case, line, "serve")


def test_a_postgresql_with_nothing_listening(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:1/contactbase"
    case = Case(operator_env(tmp_path, CONTACTBASE_DATABASE_URL=url))
    line = failed(case, "space", "create", "Acme", cwd=tmp_path)
    assert line == (
        "error: The database is unreachable (connection refused): start PostgreSQL on "
        "127.0.0.1:1, or set CONTACTBASE_DATABASE_URL to where it runs."
    )
    same_in_process(case, line, "space", "create", "Acme")


@pytest.fixture
def postgres_server() -> str:
    """The test PostgreSQL server's URL (its database beside the point)."""
    url = os.environ.get("CONTACTBASE_TEST_DATABASE_URL")
    if not url:
        pytest.skip("needs a PostgreSQL server: set CONTACTBASE_TEST_DATABASE_URL")
    return url


def test_a_postgresql_database_that_does_not_exist(tmp_path: Path, postgres_server: str) -> None:
    name = f"contactbase_missing_{uuid.uuid4().hex[:8]}"
    url = async_url(postgres_server).set(drivername="postgresql", database=name)
    plain = url.render_as_string(hide_password=False)
    case = Case(operator_env(tmp_path, CONTACTBASE_DATABASE_URL=plain))
    line = failed(case, "key", "list", "1", cwd=tmp_path)
    where = f"{url.host}:{url.port or 5432}"
    assert line == (
        f'error: The database "{name}" does not exist on {where}: create it '
        f'(createdb "{name}"), then run `contactbase migrate`.'
    )
    same_in_process(case, line, "key", "list", "1")


def test_a_user_postgresql_does_not_know(tmp_path: Path, postgres_server: str) -> None:
    stranger = f"stranger_{uuid.uuid4().hex[:8]}"
    url = async_url(postgres_server).set(drivername="postgresql", username=stranger)
    case = Case(operator_env(tmp_path, CONTACTBASE_DATABASE_URL=url.render_as_string(False)))
    line = failed(case, "space", "list", cwd=tmp_path)
    assert line.startswith(f"error: PostgreSQL on {url.host}:{url.port or 5432} refused the login")
    assert line.endswith("correct the user or password in CONTACTBASE_DATABASE_URL.")


def test_a_command_before_migrate_creates_no_database(tmp_path: Path) -> None:
    case = Case(operator_env(tmp_path, CONTACTBASE_DATABASE_URL="sqlite:///fresh.db"))
    line = failed(case, "space", "list", cwd=tmp_path)
    assert line == (
        f"error: There is no database at {tmp_path / 'fresh.db'}: run `contactbase migrate` to "
        "create it, or set CONTACTBASE_DATABASE_URL to your database."
    )
    assert list(tmp_path.iterdir()) == []


def test_an_empty_database_file_needs_migrate(tmp_path: Path) -> None:
    (tmp_path / "contactbase.db").touch(mode=0o600)  # made by something else than `migrate`
    case = Case(operator_env(tmp_path))
    line = failed(case, "space", "list", cwd=tmp_path)
    assert line == (
        f"error: The database {tmp_path / 'contactbase.db'} has no schema, or an older one "
        "(no such table: spaces): run `contactbase migrate`."
    )
    same_in_process(case, line, "space", "list")


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """A migrated database in a folder the CLI cannot write, and the prefix to run it under:
    for a user the folder's mode; root, whom modes do not stop, gets a read-only bind mount
    of the folder, in a mount namespace of the command's own."""
    folder = tmp_path / "data"
    folder.mkdir()
    contactbase(operator_env(folder), "migrate")
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder, ()
        folder.chmod(0o700)
        return
    remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    prefix = ("unshare", "--mount", "sh", "-c", remount, str(folder))
    probe = shutil.which("unshare") and subprocess.run([*prefix, "true"], check=False).returncode
    if probe != 0:
        pytest.skip("running as root, whom a folder's mode does not stop, without unshare --mount")
    yield folder, prefix


def test_a_read_only_database_folder(read_only: tuple[Path, tuple[str, ...]]) -> None:
    folder, prefix = read_only
    case = Case(operator_env(folder), prefix)
    for args in (["space", "list"], ["space", "create", "Acme"], ["serve"]):
        line = failed(case, *args, cwd=folder.parent)
        assert line.startswith("error: The ")
        assert "read-only" in line
        assert str(folder) in line

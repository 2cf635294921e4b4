"""Files holding the Space's data or a key are private from their first byte and never
written through a link (issue 16, finding 6)."""

import stat
from pathlib import Path

import pytest

from contactbase.db import Database
from contactbase.files import create_private_file
from tests.test_cli import Cli, error_line


@pytest.fixture
def cli(database_url: str, db: Database) -> Cli:
    return Cli(database_url)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_migrate_creates_the_sqlite_database_private(cli: Cli, work_dir: Path) -> None:
    database = work_dir / "fresh" / "contactbase.db"
    cli.env["CONTACTBASE_DATABASE_URL"] = f"sqlite:///{database}"
    assert cli("migrate").exit_code == 0
    assert mode(database) == 0o600
    for companion in database.parent.glob("contactbase.db-*"):  # -wal, -shm: SQLite's copies
        assert mode(companion) == 0o600


def test_the_demo_key_is_private_and_never_written_through_a_link(cli: Cli, work_dir: Path) -> None:
    key_file = work_dir / "demo-key"
    assert cli("demo", "--key-file", str(key_file)).exit_code == 0
    assert mode(key_file) == 0o600
    target = work_dir / "elsewhere"
    target.write_text("")
    planted = work_dir / "planted-key"
    planted.symlink_to(target)
    refused = cli("demo", "--key-file", str(planted))
    assert refused.exit_code == 1
    assert "planted-key" in error_line(refused)
    assert target.read_text() == ""


def test_an_existing_file_is_left_as_it_is(tmp_path: Path) -> None:
    kept = tmp_path / "kept.db"
    kept.write_bytes(b"data")
    create_private_file(kept)
    assert kept.read_bytes() == b"data"

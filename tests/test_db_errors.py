"""Which database failures are answered 503 (db.is_unavailable), on SQLAlchemy's path and on
the direct asyncpg path, where the driver's exceptions arrive unwrapped."""

import errno
import sqlite3

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError

from contactbase.db import is_retryable, is_unavailable
from contactbase.errors import NotFound


def shutting_down() -> asyncpg.PostgresError:
    return asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")


def as_the_pool_raises_it(error: Exception) -> Exception:
    """The stand-in SQLAlchemy's asyncpg adapter raises when a new connection fails."""
    return AsyncAdapt_asyncpg_dbapi.Error(str(error), error)  # type: ignore[no-untyped-call]


def as_sqlalchemy_raises_it(error: Exception) -> Exception:
    """What a statement run through SQLAlchemy raises: the stand-in, wrapped."""
    stand_in = as_the_pool_raises_it(error)
    return DBAPIError.instance("SELECT 1", {}, stand_in, AsyncAdapt_asyncpg_dbapi.Error)


@pytest.mark.parametrize(
    "failure",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        OSError(errno.ECONNRESET, "reset"),
        shutting_down(),
        as_the_pool_raises_it(shutting_down()),
        as_the_pool_raises_it(asyncpg.exceptions.TooManyConnectionsError("too many")),
        as_sqlalchemy_raises_it(asyncpg.exceptions.AdminShutdownError("terminating")),
        asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle of operation"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 15"),
        TimeoutError(),
    ],
)
def test_lost_or_refusing_databases_are_unavailable(failure: Exception) -> None:
    assert is_unavailable(failure)


@pytest.mark.parametrize(
    "failure",
    [
        NotFound("No contact with id 1."),
        ValueError("a bug"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        as_the_pool_raises_it(asyncpg.exceptions.InvalidPasswordError("wrong password")),
        OSError(errno.ENOSPC, "disk full"),
    ],
)
def test_other_failures_are_not(failure: Exception) -> None:
    assert not is_unavailable(failure)


def test_serialisation_failures_and_deadlocks_are_retryable_on_either_path() -> None:
    deadlock = asyncpg.exceptions.DeadlockDetectedError("deadlock")
    assert is_retryable(deadlock)
    assert is_retryable(as_sqlalchemy_raises_it(deadlock))
    assert not is_retryable(asyncpg.exceptions.UniqueViolationError("duplicate key"))


def sqlite_error(kind: type[sqlite3.Error], code: int, message: str) -> sqlite3.Error:
    """An error as sqlite3 raises it on the request path (contactbase.sqlite), with its code."""
    error = kind(message)
    error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize(
    ("failure", "unavailable"),
    [
        (sqlite_error(sqlite3.OperationalError, sqlite3.SQLITE_BUSY, "database is locked"), True),
        (
            sqlite_error(sqlite3.OperationalError, sqlite3.SQLITE_IOERR_WRITE, "disk I/O error"),
            True,
        ),
        (sqlite_error(sqlite3.OperationalError, sqlite3.SQLITE_FULL, "database is full"), True),
        (sqlite_error(sqlite3.OperationalError, sqlite3.SQLITE_CANTOPEN, "unable to open"), True),
        (sqlite_error(sqlite3.OperationalError, sqlite3.SQLITE_ERROR, "near x: syntax"), False),
        (sqlite_error(sqlite3.IntegrityError, sqlite3.SQLITE_CONSTRAINT, "UNIQUE failed"), False),
    ],
    ids=["locked", "io-error", "disk-full", "cannot-open", "bad-statement", "constraint"],
)
def test_sqlite_failures_of_the_file_are_unavailable_and_others_not(
    failure: sqlite3.Error, unavailable: bool
) -> None:
    assert is_unavailable(failure) is unavailable

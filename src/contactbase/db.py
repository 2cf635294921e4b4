"""Engines, sessions and the differences between SQLite and PostgreSQL, in one place."""

import asyncio
import errno
import os
import re
import socket
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import asyncpg
from sqlalchemy import BigInteger, Integer, MetaData, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DBAPIError,
    EmulatedDBAPIException,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.util import greenlet_spawn

from contactbase import sqlite
from contactbase.prepared import Connection
from contactbase.sqlite import SqliteConnection

T = TypeVar("T")

# A 64-bit id on PostgreSQL; SQLite assigns ids only to a column declared INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def async_url(url: str | URL) -> URL:
    """Accept plain or SQLAlchemy-style URLs and pick the async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def sqlite_path(url: str | URL) -> Path | None:
    """The file of an SQLite URL (None for PostgreSQL, or SQLite in memory)."""
    parsed = async_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database or "")


def _sqlite_engine(url: URL, *, begin: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=0, pool_timeout=30, hide_parameters=True
    )

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        sqlite.configure(dbapi_connection)

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


class Database:
    """The request path's engines: one for PostgreSQL; a reader and a single writer for SQLite."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.embedded: sqlite.Embedded | None = None
        if self.is_sqlite:
            # SQLite allows one writer at a time: queue writers on one connection here rather
            # than have them spin on the file lock; readers use WAL snapshots alongside.
            self.engine = _sqlite_engine(self.url, begin="BEGIN", pool_size=pool_size)
            self.writer_engine = _sqlite_engine(self.url, begin="BEGIN IMMEDIATE", pool_size=1)
            # The request path's own connections (contactbase.sqlite).
            self.embedded = sqlite.Embedded(self.url.database or "", readers=pool_size)
        else:
            # No pre-ping (a round trip per request): a connection that died with the server
            # fails its request with 503, and SQLAlchemy then discards the whole pool, so the
            # next requests connect afresh. No overflow: under load, overflow connections are
            # opened and closed request by request, the largest cost `make bench` ever found
            # (docs/performance.md); a request beyond the pool waits for a connection instead.
            self.engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=10,
                hide_parameters=True,  # values are personal data: never in logs or errors
            )
            self.writer_engine = self.engine
        # PostgreSQL reads run without BEGIN/COMMIT (two round trips fewer), so each statement
        # of a read sees its own snapshot: a read of several statements must cope with a write
        # committed between them (reads.get_contact does). SQLite reads keep a transaction,
        # which gives them one WAL snapshot.
        readers = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self.reader = async_sessionmaker(readers, expire_on_commit=False)
        self.writer = async_sessionmaker(self.writer_engine, expire_on_commit=False)

    async def dispose(self) -> None:
        if self.embedded is not None:
            await self.embedded.close()
        await self.engine.dispose()
        if self.writer_engine is not self.engine:
            await self.writer_engine.dispose()


def _sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a driver error, whether SQLAlchemy wrapped it or not."""
    return getattr(getattr(exc, "orig", exc), "sqlstate", None) or ""


# The errors of the database: SQLAlchemy's (and its stand-ins for the driver's, raised when
# the pool connects), and those of asyncpg and sqlite3 raised on the request path.
DRIVER_ERRORS = (
    DBAPIError,
    EmulatedDBAPIException,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.Error,
)


# Socket failures of a connection to the database (not, say, a full disk).
CONNECTION_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EPIPE,
}


SQLITE_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PROTOCOL,
}


def is_unavailable(exc: BaseException) -> bool:
    """True when the database cannot be reached or is not accepting work right now."""
    if isinstance(exc, ConnectionError | asyncio.TimeoutError | PoolTimeoutError | socket.gaierror):
        return True
    if isinstance(exc, OSError) and exc.errno in CONNECTION_ERRNOS:
        return True
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return True  # the connection's protocol lost its place (seen as a backend is killed)
    orig = getattr(exc, "orig", None)
    if isinstance(exc, EmulatedDBAPIException) and isinstance(orig, Exception):
        return is_unavailable(orig) or _sqlstate(exc) in ("57P01", "57P02", "57P03", "53300")
    if isinstance(exc, sqlite3.Error):
        # The file locked beyond the wait, unreadable, or its disk full (not a bad statement).
        return exc.sqlite_errorcode & 0xFF in SQLITE_UNAVAILABLE
    if not isinstance(exc, DRIVER_ERRORS):
        return False
    state = _sqlstate(exc)
    return (
        getattr(exc, "connection_invalidated", False)
        or state.startswith("08")
        or state in ("57P01", "57P02", "57P03", "53300")
        or (
            isinstance(exc, OperationalError | InterfaceError | asyncpg.InterfaceError)
            and not state.startswith("40")
        )
    )


def is_retryable(exc: BaseException) -> bool:
    """True for conflicts that a fresh attempt of the same transaction resolves."""
    return isinstance(exc, DRIVER_ERRORS) and _sqlstate(exc) in ("40001", "40P01")


def is_unique_violation(exc: BaseException) -> bool:
    """A unique index refused a row, whichever driver said so."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return True
    if isinstance(exc, sqlite3.IntegrityError):
        return "UNIQUE constraint failed" in str(exc)
    if not isinstance(exc, IntegrityError):
        return False
    return _sqlstate(exc) == "23505" or "UNIQUE constraint failed" in str(exc.orig)


@asynccontextmanager
async def transaction(db: Database, *, write: bool) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block ends, else rolled back. Callers close it
    before they answer, so that an acknowledged write is a committed one."""
    sessions = db.writer if write else db.reader
    async with sessions() as session, session.begin():
        yield session


class Lease:
    """A connection held for one request, taken at its first use: on PostgreSQL a pooled
    connection's asyncpg connection, outside any transaction (each statement atomic on its
    own); on SQLite a reader in one WAL snapshot (contactbase.sqlite). Writes go through
    `write`, work of SQLAlchemy's through `session`. Given back with `release` by whoever took
    it (again, it does nothing)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._connection: Connection | None = None
        self._pooled: Any = None
        self._released = False

    async def connect(self) -> Connection:
        """The connection, taken from the pool at the first call."""
        if self._connection is None:
            if self._released:
                raise RuntimeError("this lease was given back")
            if self.db.embedded is not None:
                self._connection = await self.db.embedded.take()
            else:
                self._pooled = await self.db.engine.raw_connection()
                self._connection = self._pooled.driver_connection
        return self._connection

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A transaction of SQLAlchemy's, for work of several statements built on the fly. The
        lease is given back first, so that a request never holds two connections (with the
        pool taken, two requests could wait on each other)."""
        await self.release()
        async with transaction(self.db, write=write) as session:
            yield session

    async def write(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """`work` in one write transaction, committed before this returns, else rolled back:
        on PostgreSQL on the lease's own connection (so a request never holds two), on SQLite
        on the single writer, with the writes queued beside it (the lease's reader given back
        first)."""
        if self.db.embedded is not None:
            await self.release()
            return await self.db.embedded.write(work)
        connection = await self.connect()
        assert not isinstance(connection, SqliteConnection)
        async with connection.transaction():
            return await work(connection)

    async def release(self, failure: BaseException | None = None) -> None:
        """Give the connection back: kept after success (the caller passes no failure when the
        work ended in a known state, such as one of its own 4xx answers); after `failure`,
        discarded, and with a lost server every older connection of the pool too."""
        if self._released:
            return
        self._released = True
        if self._connection is None:
            return
        if isinstance(self._connection, SqliteConnection):
            assert self.db.embedded is not None
            self.db.embedded.give(self._connection, failed=failure is not None)
            return
        pooled, connection = self._pooled, self._pooled.driver_connection
        try:
            if failure is not None and (is_unavailable(failure) or connection.is_closed()):
                await discard_pool(self.db, pooled, failure)
            elif failure is not None or connection.is_in_transaction():
                await greenlet_spawn(pooled.invalidate, failure)
        finally:
            await greenlet_spawn(pooled.close)  # the pool's own work runs in SQLAlchemy's greenlet


async def discard_pool(db: Database, pooled: Any, failure: BaseException) -> None:
    """As SQLAlchemy does on its own path when the server is lost: this connection goes, and
    every connection made before it is recycled at its next checkout, so that one request (not
    each) finds the loss. SQLAlchemy offers this only as the pool's `_invalidate`."""
    pool = db.engine.sync_engine.pool
    await greenlet_spawn(pool._invalidate, pooled, failure)


class Problem(NamedTuple):
    """Why the database cannot serve: `code` as SPEC 6.1 names it, `public` what /readyz (which
    anyone may read) says, without host, user or path, and `message` what the operator is
    told: where, and what to do."""

    code: str  # database_unavailable; schema_outdated when the fix is `contactbase migrate`
    public: str
    message: str


MIGRATE = "run `contactbase migrate`"
NO_SCHEMA = f"The database has no schema: {MIGRATE}."


def sqlite_problem(url: str | URL) -> Problem | None:
    """An SQLite file that does not exist (only `migrate` creates it, private: files.py) or
    that this user cannot write, it or its folder (SQLite keeps its journal beside the file);
    None for PostgreSQL and a usable file. Asked before anything opens the file: opening it
    creates it."""
    path = sqlite_path(url)
    if path is None:
        return None
    path = path.absolute()
    if not path.exists():
        fix = f"{MIGRATE} to create it, or set CONTACTBASE_DATABASE_URL to your database"
        return Problem("schema_outdated", NO_SCHEMA, f"There is no database at {path}: {fix}.")
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        message = f"The database {path} is on a read-only file system: mount it read-write."
    elif not os.access(path, os.W_OK):
        message = f"The database {path} is read-only: make it writable by this user."
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        message = (
            f"The folder {path.parent} of the database is read-only: make it writable by this "
            f"user (SQLite writes its journal, {path.name}-wal, beside the file)."
        )
    else:
        return None
    public = "The database is read-only: the service cannot write its file or folder."
    return Problem("database_unavailable", public, message)


def explain(exc: BaseException, url: str | URL) -> Problem | None:
    """What a failure met on the database at `url` means and what to do; None when it is not
    one of the database's known failures (a bug, or a failure of something else)."""
    parsed = async_url(url)
    causes = _causes(exc)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_failure(causes, parsed)
    where = _server(parsed)
    states = {getattr(cause, "sqlstate", None) for cause in causes}
    if "3D000" in states:
        fix = f'create it (createdb "{parsed.database}"), then {MIGRATE}'
        return Problem(
            "database_unavailable",
            "The database does not exist.",
            f'The database "{parsed.database}" does not exist on {where}: {fix}.',
        )
    if states & {"28000", "28P01"}:
        return Problem(
            "database_unavailable",
            "The database refused the login.",
            f"PostgreSQL on {where} refused the login ({_words(causes[-1])}): correct the user "
            "or password in CONTACTBASE_DATABASE_URL.",
        )
    if states & {"42P01", "42703"}:  # an undefined table, or column: an older schema, or none
        return Problem(
            "schema_outdated",
            f"The database has no schema, or an older one: {MIGRATE}.",
            f'The database "{parsed.database}" on {where} has no schema, or an older one: '
            f"{MIGRATE}.",
        )
    if "25006" in states:  # read_only_sql_transaction
        return postgres_read_only(parsed)
    if is_unavailable(exc) or any(_unreachable(cause) for cause in causes):
        reason = _reason(next((c for c in causes if isinstance(c, OSError)), causes[-1]))
        return Problem(
            "database_unavailable",
            f"The database is unreachable ({reason}).",
            f"The database is unreachable ({reason}): start PostgreSQL on {where}, or set "
            "CONTACTBASE_DATABASE_URL to where it runs.",
        )
    return None


def postgres_read_only(url: str | URL) -> Problem:
    """PostgreSQL answers, read-only: a standby, or default_transaction_read_only is on."""
    parsed = async_url(url)
    return Problem(
        "database_unavailable",
        "The database is read-only.",
        f'The database "{parsed.database}" on {_server(parsed)} is read-only (a standby?): '
        "set CONTACTBASE_DATABASE_URL to the primary.",
    )


def _server(url: URL) -> str:
    """Where PostgreSQL is asked for, as asyncpg would: host and port, defaults filled in."""
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def _sqlite_failure(causes: list[BaseException], url: URL) -> Problem | None:
    failure = next((cause for cause in causes if isinstance(cause, sqlite3.Error)), None)
    if failure is None:
        return None
    words, path = str(failure), Path(url.database or "").absolute()
    if words.startswith(("no such table", "no such column")):
        return Problem(
            "schema_outdated",
            f"The database has no schema, or an older one: {MIGRATE}.",
            f"The database {path} has no schema, or an older one ({words}): {MIGRATE}.",
        )
    code = failure.sqlite_errorcode & 0xFF
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return sqlite_problem(url) or Problem(
            "database_unavailable",
            "The database cannot be opened.",
            f"SQLite cannot open or write {path} ({words}).",
        )
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    """The failure, then what it wraps (SQLAlchemy's `orig`, the driver's own), innermost last."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = getattr(cause, "orig", None) or cause.__cause__ or cause.__context__
    return chain


def _unreachable(exc: BaseException) -> bool:
    """A failure to connect: refused, unknown host, no route, no answer in time."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    # asyncio's error when every address of a host failed (errno None).
    return isinstance(exc, OSError) and str(exc).startswith("Multiple exceptions")


def _reason(exc: BaseException) -> str:
    """A connection failure in a few words: `connection refused`, not asyncio's sentence."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror.lower()  # `name or service not known`
    number = exc.errno if isinstance(exc, OSError) else None
    if number is None and (found := re.search(r"\[Errno (\d+)\]", str(exc))):
        number = int(found.group(1))  # the first of asyncio's "Multiple exceptions: …"
    return os.strerror(number).lower() if number else _words(exc)


def _words(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def utcnow() -> datetime:
    """Now, in UTC, as the naive datetime the database stores."""
    return datetime.now(UTC).replace(tzinfo=None)

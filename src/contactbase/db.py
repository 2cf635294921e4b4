"""Engines, sessions and the differences between SQLite and PostgreSQL, in one place."""

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, cast

import asyncpg
from fastapi import Request
from sqlalchemy import BigInteger, Integer, MetaData, event
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
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
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from contactbase.errors import DomainError

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


def async_url(url: str) -> URL:
    """Accept plain or SQLAlchemy-style URLs and pick the async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def _sqlite_engine(url: URL, *, begin: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=0, pool_timeout=30, hide_parameters=True
    )

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that SAVEPOINT works and writers can
        # start with BEGIN IMMEDIATE (no "database is locked" upgrade failures mid-transaction).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            "busy_timeout=10000",
            "synchronous=NORMAL",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


class Database:
    """The request path's engines: one for PostgreSQL; a reader and a single writer for SQLite."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            # SQLite allows one writer at a time: queue writers on one connection here rather
            # than have them spin on the file lock; readers use WAL snapshots alongside.
            self.engine = _sqlite_engine(self.url, begin="BEGIN", pool_size=pool_size)
            self.writer_engine = _sqlite_engine(self.url, begin="BEGIN IMMEDIATE", pool_size=1)
        else:
            # No pre-ping (a round trip per request): a connection that died with the server
            # fails its request with 503, and SQLAlchemy then discards the whole pool, so the
            # next requests connect afresh. No overflow: under load, overflow connections are
            # opened and closed request by request, which cost creates 40% of their throughput
            # in `make bench`; a request beyond the pool waits for a connection instead.
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
        await self.engine.dispose()
        if self.writer_engine is not self.engine:
            await self.writer_engine.dispose()


def _sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a driver error, whether SQLAlchemy wrapped it or not."""
    return getattr(getattr(exc, "orig", exc), "sqlstate", None) or ""


# The errors of the database: SQLAlchemy's (and its stand-ins for the driver's, raised when
# the pool connects), and asyncpg's raised on the direct path.
DRIVER_ERRORS = (DBAPIError, EmulatedDBAPIException, asyncpg.PostgresError, asyncpg.InterfaceError)


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
    if not isinstance(exc, IntegrityError):
        return False
    return _sqlstate(exc) == "23505" or "UNIQUE constraint failed" in str(exc.orig)


@asynccontextmanager
async def transaction(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's one transaction: committed when the block ends, else rolled back. The
    endpoints close it before they answer, so that an acknowledged write is a committed one."""
    db: Database = request.app.state.db
    sessions = db.reader if request.method in ("GET", "HEAD") else db.writer
    async with sessions() as session, session.begin():
        yield session


# A connection for prebuilt statements: asyncpg's own on PostgreSQL, else a SQLAlchemy session.
Connection: TypeAlias = "asyncpg.Connection[Any] | AsyncSession"


class Prepared:
    """A statement built once and compiled once. On PostgreSQL it runs straight on asyncpg,
    which costs about a third of the CPU of SQLAlchemy's execution path; through a session
    (SQLite, and the writes that need the ORM) it runs as any statement. Rows are read by
    position, which both kinds of row allow."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
        compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=dialect))
        self.sql = str(compiled)
        self.names = list(compiled.positiontup or ())

    async def rows(self, connection: Connection, params: dict[str, Any]) -> list[Any]:
        if isinstance(connection, AsyncSession):
            result = await (await connection.connection()).execute(self.statement, params)
            return list(result.all())
        return list(await connection.fetch(self.sql, *(params[name] for name in self.names)))

    async def row(self, connection: Connection, params: dict[str, Any]) -> Any:
        """The first row, or None."""
        rows = await self.rows(connection, params)
        return rows[0] if rows else None


@asynccontextmanager
async def direct(request: Request) -> AsyncIterator[Connection]:
    """The hot endpoints' connection: on PostgreSQL a pooled connection's asyncpg connection,
    outside any transaction (their statements are each atomic on their own); on SQLite, where
    they only read (writes go through `transaction`), a reader session in its snapshot. A
    connection that fails mid-way is discarded, and with a lost server the whole pool is, as
    SQLAlchemy does on its own path."""
    db: Database = request.app.state.db
    if db.is_sqlite:
        # Not the writer: a create would otherwise take SQLite's one write lock twice, the
        # first time only to check its key.
        async with db.reader() as session, session.begin():
            yield session
        return
    pooled = await db.engine.raw_connection()
    connection: asyncpg.Connection[Any] = pooled.driver_connection
    try:
        yield connection
    except BaseException as exc:
        if is_unavailable(exc) or connection.is_closed():
            # As SQLAlchemy does on its own path: every connection made before this one
            # is recycled at its next checkout, so one request (not each) finds the loss.
            pool = db.engine.sync_engine.pool
            await greenlet_spawn(pool._invalidate, pooled, exc)
        elif not isinstance(exc, DomainError) or connection.is_in_transaction():
            # Only an answer of ours (a 4xx, raised between statements) leaves the
            # connection in a known state; after anything else it goes.
            await greenlet_spawn(pooled.invalidate, exc)
        raise
    finally:
        await greenlet_spawn(pooled.close)  # the pool's own work runs in SQLAlchemy's greenlet

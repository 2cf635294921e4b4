"""SQLite on the request path: statements run on the event loop, writes committed in groups.

Through aiosqlite every statement makes round trips between the event loop and a thread per
connection, and under load those hops, not SQLite, were where a request's time went
(docs/performance.md). A statement over a few indexed rows takes SQLite microseconds, so here
the request path's statements run on the event loop itself, on the standard library's
`sqlite3` connections (SQLAlchemy's engine stays for the CLI, the list, exports and migrations):

- Readers: a pool of connections. A request holds one, inside one read transaction (one WAL
  snapshot for all its reads), until it gives it back.
- The writer: one connection, as SQLite allows one writer at a time. Writes queue up; all that
  are queued when the writer comes free run in one transaction, each in a savepoint of its own
  (a write that fails is rolled back to its savepoint, alone), and the transaction is committed
  once, in a thread, off the event loop (the fsync of synchronous=FULL); every write is answered
  after that commit. Group commit: one fsync for many writes.
- Another process holding the file's write lock (the CLI, a second server) is waited for
  without blocking the event loop: these connections do not wait inside SQLite (busy_timeout
  is 0), a busy statement is retried after a pause, for up to BUSY_SECONDS.
"""

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
Work = Callable[["SqliteConnection"], Awaitable[Any]]

# Every connection to the file, the app's and the CLI's: WAL, so readers and the writer run
# side by side; foreign keys enforced; an acknowledged write survives a power cut (SPEC 6.8).
PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "synchronous=FULL")
BUSY_TIMEOUT_MS = 10_000  # how long a connection outside the request path waits for the lock
BUSY_SECONDS = BUSY_TIMEOUT_MS / 1000
READER_WAIT_SECONDS = 30  # for a free reader, as the engine's pool waits for a connection


def configure(connection: Any, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
    """Put a new DB-API connection (sqlite3's, or aiosqlite's adaptor of it) in the app's
    settings. The driver's own transaction handling is turned off: the app begins them itself
    (BEGIN IMMEDIATE for writers, so that none fails midway on the upgrade to the write lock)."""
    connection.isolation_level = None
    cursor = connection.cursor()
    # The wait first: it governs the others. WAL is kept in the file once set, and setting it
    # again waits for a lock another connection may hold (for the request path's connections,
    # whose statements run on the event loop, that wait would stall every request): only a
    # file not yet in WAL is switched.
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.execute("PRAGMA journal_mode")
    in_wal = cursor.fetchone()[0] == "wal"  # (a cursor of aiosqlite's adaptor chains nothing)
    for pragma in PRAGMAS:
        if not (in_wal and pragma == "journal_mode=WAL"):
            cursor.execute(f"PRAGMA {pragma}")
    cursor.close()
    # What PostgreSQL does with ICU for custom_field_filters, SQLite does in Python. Imported
    # here: the filters' module imports the models, and they this module (through db).
    from contactbase.contacts.filter_clauses import fold_case, has_word

    connection.create_function("contactbase_fold", 1, fold_case, deterministic=True)
    connection.create_function("contactbase_has_word", 2, has_word, deterministic=True)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Locked by another connection; extended codes (SQLITE_BUSY_RECOVERY, ...) included."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class SqliteConnection:
    """A `sqlite3` connection whose statements run on the event loop, waiting for a lock held
    elsewhere with pauses instead of inside SQLite."""

    def __init__(self, path: str) -> None:
        # Used by one task at a time; only the writer's COMMIT runs in another thread.
        self.raw = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        configure(self.raw, busy_timeout_ms=0)
        self.waiting = False  # retrying a statement that found the file locked
        self.data_version: int | None = None  # as this connection last saw it

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """The rows of one statement."""
        return await self._retrying(lambda: self.raw.execute(sql, args).fetchall())

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        await self._retrying(lambda: self.raw.execute(sql, args))

    async def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement stepped once per row. Only in a write transaction, whose lock is held
        already: a busy file cannot interrupt it half way (then a retry would repeat rows)."""
        assert self.raw.in_transaction, "execute_many runs inside a write transaction"
        self.raw.executemany(sql, rows)

    async def _retrying(self, statement: Callable[[], T]) -> T:
        deadline, pause = time.monotonic() + BUSY_SECONDS, 0.001
        while True:
            try:
                return statement()
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
            self.waiting = True
            try:
                await asyncio.sleep(pause)
            finally:
                self.waiting = False
            pause = min(pause * 2, 0.05)

    def end(self) -> None:
        """Roll back whatever transaction is open (a reader's snapshot, a failed write)."""
        if self.raw.in_transaction:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()


class Embedded:
    """The request path's connections to one SQLite file: readers, and the group-committing
    writer."""

    def __init__(self, path: str, *, readers: int) -> None:
        self.path = path
        self._idle: list[SqliteConnection] = []
        self._readers = asyncio.Semaphore(readers)
        self._writer: SqliteConnection | None = None
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._draining: asyncio.Task[None] | None = None
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="contactbase-commit")
        self._closed = False
        self.commits = 0  # transactions the writer committed
        self.writes = 0  # writes they held (group commit: several a transaction under load)
        self._changes = 0  # commits seen by the readers' looks (change_mark)
        self.pending = 0  # writes given to `write` and not yet answered

    async def take(self) -> SqliteConnection:
        """A reader, in a read transaction of its own."""
        if self._readers.locked():  # all taken: wait, as the engine's pool waits, then give up
            async with asyncio.timeout(READER_WAIT_SECONDS):
                await self._readers.acquire()
        else:
            await self._readers.acquire()
        try:
            connection = self._idle.pop() if self._idle else SqliteConnection(self.path)
            await connection.execute("BEGIN")
        except BaseException:
            self._readers.release()
            raise
        return connection

    def give(self, connection: SqliteConnection, *, failed: bool = False) -> None:
        """A reader back: its transaction ended; after a failure, closed rather than reused."""
        try:
            if failed or self._closed:
                connection.close()
            else:
                connection.end()
                self._idle.append(connection)
        except sqlite3.Error:
            connection.close()  # it could not even roll back: not one to hand out again
        finally:
            self._readers.release()

    async def change_mark(self, reader: SqliteConnection) -> int:
        """A number that changes whenever another connection (this process's writer, the
        CLI, another server) has committed since `reader` last looked, read as the first
        statement of its snapshot (`PRAGMA data_version`): what was read after it, in the same
        snapshot, is current as of this mark. Each reader sees every commit made since its own
        last look, so a commit moves the mark at the first look after it, on any reader."""
        version = (await reader.fetch("PRAGMA data_version", ()))[0][0]
        if version != reader.data_version:
            reader.data_version = version
            self._changes += 1
        return self._changes

    @property
    def writer_waiting(self) -> bool:
        """The writer waits for the file's write lock, held by another connection."""
        return self._writer is not None and self._writer.waiting

    async def write(self, work: Callable[[SqliteConnection], Awaitable[T]]) -> T:
        """Run `work` in a write transaction, committed (with others queued beside it) before
        this returns; if `work` raises, nothing of it is written."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((work, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        self.pending += 1
        try:
            return await future
        finally:
            self.pending -= 1

    async def _drain(self) -> None:
        while self._queue:
            queued, self._queue = self._queue, []
            batch = [(work, future) for work, future in queued if not future.done()]
            if batch:
                await self._commit_together(batch)

    async def _commit_together(self, batch: list[tuple[Work, "asyncio.Future[Any]"]]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            if self._writer is None:
                self._writer = SqliteConnection(self.path)
            writer = self._writer
            await writer.execute("BEGIN IMMEDIATE")
            for work, future in batch:
                await writer.execute("SAVEPOINT one_write")
                try:
                    result = await work(writer)
                except Exception as exc:
                    await writer.execute("ROLLBACK TO one_write")
                    await writer.execute("RELEASE one_write")
                    outcomes.append((future, None, exc))
                else:
                    await writer.execute("RELEASE one_write")
                    outcomes.append((future, result, None))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._committer, writer.raw.execute, "COMMIT")
            self.commits += 1
            self.writes += sum(1 for _future, _result, error in outcomes if error is None)
        except BaseException as exc:
            self._abandon()
            for _work, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for future, result, error in outcomes:
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    def _abandon(self) -> None:
        """After a failed transaction: rolled back, or the connection dropped for a new one."""
        if self._writer is None:
            return
        try:
            self._writer.end()
        except sqlite3.Error:
            self._writer.close()
            self._writer = None

    async def close(self) -> None:
        self._closed = True
        if self._draining is not None:
            await asyncio.gather(self._draining, return_exceptions=True)
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._committer.shutdown(wait=True)

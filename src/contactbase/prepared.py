"""Prepared statements: built once from the models, compiled once, run past SQLAlchemy's
execution path on the request path's own connections (asyncpg's, sqlite3's); and the one
difference of SQL between the two that they need, how a list is passed."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Generic, TypeAlias, TypeVar, cast

import asyncpg
import orjson
from sqlalchemy import JSON, bindparam, func, select
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from contactbase.sqlite import SqliteConnection

# A connection of the request path: asyncpg's own on PostgreSQL, sqlite3's on SQLite.
Connection: TypeAlias = "asyncpg.Connection[Any] | SqliteConnection"
Row = TypeVar("Row")
Processor = Callable[[Any], Any] | None
SQLITE = SQLiteDialect_pysqlite()


def _compiled(statement: Executable, dialect: Any) -> tuple[SQLCompiler, str, list[str]]:
    compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=dialect))
    return compiled, str(compiled), list(compiled.positiontup or ())


def _json_text(value: Any) -> str:
    """A list parameter as SQLite's json_each reads it (orjson: the stdlib's encoder cost
    several percent of a create)."""
    return orjson.dumps(value).decode()


class _SqliteForm:
    """A statement compiled for sqlite3, with the conversions SQLAlchemy would apply to its
    parameters and its columns (SQLite keeps a datetime as text, a list here as JSON)."""

    def __init__(self, statement: Executable) -> None:
        compiled, self.sql, self.names = _compiled(statement, SQLITE)
        kinds = [compiled.binds[name].type.dialect_impl(SQLITE) for name in self.names]
        self.binds = [
            _json_text if isinstance(kind, JSON) else kind.bind_processor(SQLITE) for kind in kinds
        ]
        columns = getattr(statement, "exported_columns", ())
        self.results: list[Processor] = [
            column.type.dialect_impl(SQLITE).result_processor(SQLITE, None) for column in columns
        ]
        self.converts = any(self.results)

    def args(self, params: dict[str, Any]) -> list[Any]:
        return [
            params[name] if convert is None else convert(params[name])
            for name, convert in zip(self.names, self.binds, strict=True)
        ]

    def converted(self, record: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            value if convert is None or value is None else convert(value)
            for value, convert in zip(record, self.results, strict=True)
        )


class Prepared(Generic[Row]):
    """A statement built once and compiled once, whose rows come as `row` (a NamedTuple of
    its columns, so every column read is typed). It runs past SQLAlchemy's execution path
    (docs/performance.md): on asyncpg, which prepares it, or on sqlite3, with the conversions
    of SQLAlchemy's column types. Where the two dialects need different SQL (PostgreSQL binds
    a list as an array; SQLite reads it from JSON, `json_each`), `sqlite` is SQLite's form of
    the same statement, with the same parameters."""

    def __init__(
        self, statement: Executable, row: Callable[..., Row], *, sqlite: Executable | None = None
    ) -> None:
        self.statement = statement
        self.sqlite = sqlite if sqlite is not None else statement
        self.row_type = row
        dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
        _compiled_pg, self.sql, self.names = _compiled(statement, dialect)
        self._sqlite_form: _SqliteForm | None = None  # compiled at its first use

    @property
    def sqlite_form(self) -> _SqliteForm:
        if self._sqlite_form is None:
            self._sqlite_form = _SqliteForm(self.sqlite)
        return self._sqlite_form

    async def rows(self, connection: Connection, params: dict[str, Any]) -> list[Row]:
        make = self.row_type
        if isinstance(connection, SqliteConnection):
            form = self.sqlite_form
            records = await connection.fetch(form.sql, form.args(params))
            if form.converts:
                records = [form.converted(record) for record in records]
            return [make(*record) for record in records]
        records = await connection.fetch(self.sql, *(params[name] for name in self.names))
        return [make(*record) for record in records]

    async def row(self, connection: Connection, params: dict[str, Any]) -> Row | None:
        """The first row, or None."""
        rows = await self.rows(connection, params)
        return rows[0] if rows else None

    async def run(self, connection: Connection, params: dict[str, Any]) -> None:
        """Run a statement that returns no rows."""
        if isinstance(connection, SqliteConnection):
            form = self.sqlite_form
            await connection.execute(form.sql, form.args(params))
        else:
            await connection.execute(self.sql, *(params[name] for name in self.names))


@dataclass(frozen=True)
class Copy:
    """PostgreSQL's form of a Bulk insert of many rows: COPY into `table`, the fixed values
    (`fixed`: column -> parameter) then each row's `columns`."""

    table: str
    fixed: dict[str, str]
    columns: list[str]


# From this many rows, an insert goes by COPY: a round trip more than a prepared statement
# (COPY is begun, then fed), but asyncpg encodes an array parameter element by element (an ABC
# check each), COPY's rows at a third of that cost (docs/performance.md).
COPY_FROM_ROWS = 50


class Bulk:
    """A statement run for many rows at once: on PostgreSQL `pg`, one statement over `unnest`
    of one array per column (the arrays bear the columns' names), or for an insert of many
    rows, `copy`; on SQLite `sqlite`, the statement of one row with scalar parameters of the
    same names, stepped once per row (there is no round trip to save). Parameters shared by
    every row (`fixed`: the Space, the time) are passed once."""

    def __init__(
        self,
        pg: Executable,
        sqlite: Executable,
        columns: Sequence[str],
        copy: Copy | None = None,
    ) -> None:
        self.columns = list(columns)
        self.copy = copy
        _compiled_pg, self.sql, self.names = _compiled(pg, PGDialect_asyncpg())  # type: ignore[no-untyped-call]
        self.sqlite = sqlite
        self._sqlite_form: _SqliteForm | None = None

    async def run(
        self, connection: Connection, fixed: dict[str, Any], rows: Sequence[Sequence[Any]]
    ) -> None:
        if not rows:
            return
        if isinstance(connection, SqliteConnection):
            if self._sqlite_form is None:
                self._sqlite_form = _SqliteForm(self.sqlite)
            form = self._sqlite_form
            await connection.execute_many(form.sql, self._sqlite_rows(form, fixed, rows))
            return
        if self.copy is not None and len(rows) >= COPY_FROM_ROWS:
            given = tuple(fixed[name] for name in self.copy.fixed.values())
            await connection.copy_records_to_table(
                self.copy.table,
                records=[(*given, *row) for row in rows],
                columns=[*self.copy.fixed, *self.copy.columns],
            )
            return
        arrays = dict(
            zip(self.columns, (list(column) for column in zip(*rows, strict=True)), strict=True)
        )
        params = fixed | arrays
        await connection.execute(self.sql, *(params[name] for name in self.names))

    def _sqlite_rows(
        self, form: _SqliteForm, fixed: dict[str, Any], rows: Sequence[Sequence[Any]]
    ) -> list[Any]:
        """Each row's parameters in the statement's order: its columns, converted where the
        column's type converts, and the fixed values (converted once)."""
        index = {name: position for position, name in enumerate(self.columns)}
        constants: list[Any] = []
        order: list[int] = []  # of each parameter: its place in a row extended by the constants
        converts: list[tuple[int, Any]] = []
        for place, (name, convert) in enumerate(zip(form.names, form.binds, strict=True)):
            if name in index:
                order.append(index[name])
                if convert is not None:
                    converts.append((place, convert))
            else:
                value = fixed[name]
                order.append(len(self.columns) + len(constants))
                constants.append(value if convert is None else convert(value))
        pick = itemgetter(*order)
        extra = tuple(constants)
        if not converts:
            return [pick((*row, *extra)) for row in rows]
        picked = []
        for row in rows:
            args = list(pick((*row, *extra)))
            for place, convert in converts:
                if args[place] is not None:
                    args[place] = convert(args[place])
            picked.append(args)
        return picked


def no_rows() -> None:
    """The `row` of a statement that returns none."""


def json_each(name: str, alias: str) -> Any:
    """SQLite: the items of the list parameter `name`, sent as JSON, as rows (key, value)."""
    return func.json_each(bindparam(name, type_=JSON)).table_valued("key", "value").alias(alias)


def among(column: Any, name: str) -> Any:
    """SQLite: `column` is among the items of the list parameter `name` (PostgreSQL's form is
    `column = ANY(:name)`, the list bound as an array)."""
    items = json_each(name, f"{name}_items")
    return column.in_(select(items.c.value).select_from(items))

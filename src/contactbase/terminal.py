"""What the `contactbase` commands share: one committed transaction, how they print, and how
any of them fails: one line on standard error."""

import asyncio
import errno
import json
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession
from typer.core import TyperGroup

from contactbase import settings as configuration
from contactbase.db import DRIVER_ERRORS, Database, explain, sqlite_problem
from contactbase.errors import ApiError, ServiceUnavailable
from contactbase.ratelimit import mark_change
from contactbase.settings import Settings

T = TypeVar("T")

console = Console()
errors = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON value and nothing else.")]


def run(work: Callable[[AsyncSession], Awaitable[T]], *, changes_access: bool = False) -> T:
    """Run `work` in one committed transaction against the configured database. A change of
    who may do what (`changes_access`) is then announced to the servers, whose cached keys
    must not outlive it (spaces/keycache.py): through Redis, when one is configured."""

    async def main() -> T:
        settings = Settings()
        db = database(settings)
        try:
            async with db.writer() as session, session.begin():
                done = await work(session)
        finally:
            await db.dispose()
        if changes_access and settings.redis_url:
            try:
                await mark_change(settings.redis_url)
            except (RedisError, OSError) as exc:
                raise ServiceUnavailable(
                    "The change is saved, but Redis could not be reached to tell the servers "
                    f"({exc}); until it is, they may go on with what they cached: run the "
                    "command again."
                ) from None
        return done

    return asyncio.run(main())


def database(settings: Settings) -> Database:
    """The configured database, for one command. A missing SQLite file is refused, not
    created: only `migrate` makes it, readable by the service's user alone (files.py)."""
    if (problem := sqlite_problem(settings.database_url)) is not None:
        raise ApiError(problem.message)
    return Database(settings.database_url, pool_size=1)


def show(value: Any, as_json: bool, title: str = "") -> None:
    """Print a record or a list of records: JSON; for people, a record as `field: value` lines
    (never cut to the terminal's width) and a list as a table."""
    if as_json:
        typer.echo(json.dumps(value))
        return
    if isinstance(value, dict):
        width = max(map(len, value))
        for field, cell in value.items():
            typer.echo(f"{field:<{width}}  {_cell(cell)}")
        return
    rows = value
    if not rows:
        console.print(f"No {title.lower() or 'rows'}.")
        return
    table = Table(title=title or None)
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(cell) for cell in row.values()))
    console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={val}" for key, val in value.items())
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


class Commands(TyperGroup):
    """The `contactbase` group: whatever fails in a command below it ends here, said in one line
    on standard error, `error: …`, with status 1 (also with --json: nothing on standard output
    then); with CONTACTBASE_DEBUG=1, the traceback instead. Exits and click's usage errors
    (usage and one error line, status 2) pass through as they are."""

    def invoke(self, ctx: Any) -> Any:  # click's Context: typer carries its own click
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            if os.environ.get("CONTACTBASE_DEBUG", "").lower() in ("1", "true", "yes"):
                raise
            say_error(failure(exc))
            raise typer.Exit(1) from None


def say_error(message: str) -> None:
    """`error: message` on standard error, one line."""
    # Unwrapped (rich wraps at the terminal's width, 80 columns without one), and a Text, not
    # markup: a path or a cell quoted may hold `[/x]` or `:name:`, read as a style or emoji.
    errors.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)


def failure(exc: Exception) -> str:
    """What went wrong, and what to do, in one sentence."""
    if isinstance(exc, ApiError):
        return exc.message
    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        return configuration.describe(exc)
    if isinstance(exc, RedisError):
        return f"Redis is unreachable ({exc}): start it, or correct CONTACTBASE_REDIS_URL."
    try:
        problem = explain(exc, Settings().database_url)
    except ValidationError:
        problem = None
    if problem is not None:
        return problem.message
    if isinstance(exc, OSError) and exc.filename is not None:
        fix = ""
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            fix = " Give this user access to it and its folder, or choose another path."
        return f"{exc.filename}: {exc.strerror or exc}.{fix}"
    if isinstance(exc, DRIVER_ERRORS):
        cause = getattr(exc, "orig", None) or exc  # the driver's words, not SQLAlchemy's
        return f"The database refused the command ({' '.join(str(cause).split())})."
    return (
        f"Unexpected {type(exc).__name__}: {' '.join(str(exc).split())}. Run again with "
        "CONTACTBASE_DEBUG=1 to see where it happened, and report it."
    )

"""What the `contactbase` commands share: one committed transaction, and how they print."""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from contactbase.db import Database
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
        db = Database(settings.database_url, pool_size=1)
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


def fail(error: ApiError, as_json: bool) -> typer.Exit:
    """Say what went wrong, in one line, and the exit to raise."""
    if as_json:
        typer.echo(json.dumps(error.content()))
    else:
        # Unwrapped (rich wraps at the terminal's width, 80 columns without one), and a Text, not
        # markup: a path or a cell quoted may hold `[/x]` or `:name:`, read as a style or emoji.
        errors.print(Text.assemble(("error:", "red"), f" {error.message}"), soft_wrap=True)
    return typer.Exit(1)

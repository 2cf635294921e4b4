"""The `contactbase` command: migrations, Spaces, API keys, imports and the server."""

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from contactbase import __version__, logs
from contactbase.db import Database, Lease, Problem, async_url, sqlite_path
from contactbase.errors import ApiError
from contactbase.files import create_private_file, write_private
from contactbase.progress import ImportMeter
from contactbase.ratelimit import ENDPOINTS
from contactbase.settings import Settings
from contactbase.spaces import service
from contactbase.spaces.service import DEFAULT_PERMISSIONS, PERMISSIONS, key_view, space_view
from contactbase.terminal import Commands, JsonFlag, console, database, errors, run, show
from contactbase.webhooks.commands import webhook_app

if TYPE_CHECKING:
    from contactbase.contacts import import_files, imports

app = typer.Typer(
    cls=Commands,  # every failure of a command as one line (terminal.py)
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    # Click's own help and usage errors: typer's panels show every flag as taking a <bool>.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,  # CONTACTBASE_DEBUG=1: Python's plain traceback
)
space_app = typer.Typer(
    help="Create, list and change Spaces.", no_args_is_help=True, rich_markup_mode=None
)
key_app = typer.Typer(
    help="Create, list and revoke API keys.", no_args_is_help=True, rich_markup_mode=None
)
contact_app = typer.Typer(
    help="Act on one contact: erase it.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(space_app, name="space")
app.add_typer(key_app, name="key")
app.add_typer(contact_app, name="contact")
app.add_typer(webhook_app, name="webhook")
# Rows a transaction of `import`, as POST /contacts/batch (batch_schemas.MAX_BATCH).
MAX_BATCH = 1000


def print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"contactbase {__version__}")
        raise typer.Exit()


@app.callback()
def commands(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=print_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Administer contactbase: the schema, Spaces (tenants), API keys, and the server.
    CONTACTBASE_DEBUG=1 shows a failure's traceback."""


@app.command()
def migrate(as_json: JsonFlag = False) -> None:
    """Create the database schema, or upgrade it to this version's."""
    from alembic import command

    from contactbase.migrations import migrations_config, schema_head

    settings = Settings()
    create_private_file(sqlite_path(settings.database_url))
    command.upgrade(migrations_config(settings.database_url), "head")
    show({"status": "migrated", "schema": schema_head()}, as_json) if as_json else console.print(
        f"Database migrated to schema {schema_head()}."
    )


@space_app.command("create")
def space_create(
    name: str,
    timezone: Annotated[str, typer.Option(help="IANA time zone for list date filters.")] = "UTC",
    as_json: JsonFlag = False,
) -> None:
    """Create a Space (a tenant)."""
    space = run(lambda s: service.create_space(s, name, timezone))
    show(space_view(space), as_json, "Space")


@space_app.command("list")
def space_list(as_json: JsonFlag = False) -> None:
    """List every Space."""
    spaces = run(service.list_spaces)
    show([space_view(space) for space in spaces], as_json, "Spaces")


def _space_command(
    change: Callable[[AsyncSession, int], Awaitable[Any]],
    space_id: int,
    as_json: bool,
    *,
    changes_access: bool = True,
) -> None:
    space = run(lambda s: change(s, space_id), changes_access=changes_access)
    show(space_view(space), as_json, "Space")


@space_app.command("show")
def space_show(space_id: int, as_json: JsonFlag = False) -> None:
    """Show one Space with its effective per-minute limits."""
    _space_command(service.get_space, space_id, as_json, changes_access=False)


@space_app.command("activate")
def space_activate(space_id: int, as_json: JsonFlag = False) -> None:
    """Let a Space's keys work again (applies to the next request)."""
    _space_command(lambda s, i: service.set_status(s, i, "active"), space_id, as_json)


@space_app.command("deactivate")
def space_deactivate(space_id: int, as_json: JsonFlag = False) -> None:
    """Refuse a Space's requests with 403, subscription inactive (applies to the next request)."""
    _space_command(lambda s, i: service.set_status(s, i, "inactive"), space_id, as_json)


@space_app.command("set-limit")
def space_set_limit(
    space_id: int,
    endpoint: Annotated[str, typer.Argument(help=f"One of: {', '.join(ENDPOINTS)}.")],
    per_minute: Annotated[int, typer.Argument(help="Requests per minute for this Space.")],
    as_json: JsonFlag = False,
) -> None:
    """Raise or lower one endpoint's per-minute limit for a Space."""
    _space_command(lambda s, i: service.set_limit(s, i, endpoint, per_minute), space_id, as_json)


@space_app.command("set-label")
def space_set_label(
    space_id: int,
    slot: Annotated[str, typer.Argument(help="profile_field_1 to profile_field_30.")],
    label: Annotated[str | None, typer.Argument(help="The slot's name in this Space.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the slot's label.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Name a custom-field slot: the list shows it under that name with
    use_custom_field_labels=1. Labels are unique within a Space."""
    if (label is None) != clear:
        raise ApiError("Give a LABEL, or --clear to remove the slot's label.")
    _space_command(
        lambda s, i: service.set_label(s, i, slot, label), space_id, as_json, changes_access=False
    )


@key_app.command("create")
def key_create(
    space_id: int,
    name: Annotated[str | None, typer.Option(help="A label to recognise the key by.")] = None,
    permission: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Repeatable: {', '.join(PERMISSIONS)} (default: "
            f"{' and '.join(DEFAULT_PERMISSIONS)}; contacts:delete only when asked for)."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create an API key for a Space. The key is printed now and never again."""
    key, raw_key = run(
        lambda s: service.create_key(s, space_id, name, permission or DEFAULT_PERMISSIONS)
    )
    view = {**key_view(key), "key": raw_key}
    del view["revoked_at"]
    show(view, as_json)
    if not as_json:
        console.print("Store the key now: only its hash is kept, it cannot be shown again.")


@key_app.command("list")
def key_list(space_id: int, as_json: JsonFlag = False) -> None:
    """List a Space's keys (prefixes only)."""
    keys = run(lambda s: service.list_keys(s, space_id))
    show([key_view(key) for key in keys], as_json, "API keys")


@key_app.command("revoke")
def key_revoke(key_id: int, as_json: JsonFlag = False) -> None:
    """Revoke a key: its next request is refused with 401."""
    key = run(lambda s: service.revoke_key(s, key_id), changes_access=True)
    show(key_view(key), as_json, "API key")


@contact_app.command("erase")
def contact_erase(
    space_id: int,
    contact_id: Annotated[int | None, typer.Option("--id", help="The contact's id.")] = None,
    email: Annotated[str | None, typer.Option(help="An email of the contact.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Erase a person (a data-subject request): the contact, every contact merged into it and
    all their values, as DELETE /contacts/{id} does. Prints what was removed, as counts."""
    if (contact_id is None) == (email is None):
        raise ApiError("Give one of --id and --email.")

    async def erase() -> dict[str, int]:
        from contactbase.contacts import erasure

        db = database(Settings())
        lease = Lease(db)
        failure: BaseException | None = None
        try:
            erased = await erasure.erase_contact(
                lease, space_id, contact_id=contact_id, email=email
            )
            return erased.report()
        except BaseException as exc:
            failure = exc
            raise
        finally:
            await lease.release(failure)
            await db.dispose()

    show(asyncio.run(erase()), as_json)


@app.command("import")
def import_contacts(
    space_id: int,
    file: Annotated[
        Path, typer.Argument(help="A .csv file (with a header row), or .ndjson / .jsonl.")
    ],
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Go on after the lines an earlier run on FILE committed."),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Validate every row and list the rejected; write nothing."),
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=MAX_BATCH, help="Rows written per transaction.")
    ] = MAX_BATCH,
    as_json: JsonFlag = False,
) -> None:
    """Import contacts from a CSV or NDJSON file into a Space, in batches written straight to
    the database (no HTTP, no rate limit); rejected rows go to FILE.rejects (docs/import.md)."""
    from contactbase.contacts import import_files  # it needs FastAPI (validation): only here

    if resume and dry_run:
        raise ApiError("--dry-run and --resume cannot be used together.")
    settings = Settings()
    try:
        source = import_files.open_source(file, settings.max_body_bytes)
        counts = asyncio.run(
            _import(settings, space_id, source, resume=resume, dry_run=dry_run, size=batch_size)
        )
    except KeyboardInterrupt:
        interrupted = "interrupted: the batches committed stay; run again with --resume to go on."
        errors.print(interrupted, soft_wrap=True)
        raise typer.Exit(130) from None
    summary = counts.summary(dry_run=dry_run)
    if as_json:
        show(summary, as_json)
        return
    listed = f" (listed in {source.rejects_path})" if counts.failed else ""
    if dry_run:
        typer.echo(
            f"Checked {file} (dry run, nothing written): {counts.lines} lines, "
            f"{counts.valid} valid rows, {counts.failed} rejected{listed}."
        )
    else:
        typer.echo(
            f"Imported {file} into Space {space_id}: {counts.lines} lines, "
            f"{counts.created} contacts created, {counts.merged} merged, "
            f"{counts.failed} rows rejected{listed}."
        )


async def _import(
    settings: Settings,
    space_id: int,
    source: "import_files.Source",
    *,
    resume: bool,
    dry_run: bool,
    size: int,
) -> "imports.Counts":
    from contactbase.contacts import imports

    db = database(settings)
    meter = ImportMeter(source.path.stat().st_size, dry_run=dry_run, console=errors)
    try:
        return await imports.import_file(
            db,
            space_id,
            source,
            resume=resume,
            dry_run=dry_run,
            batch_size=size,
            max_line_bytes=settings.max_body_bytes,
            report=meter,
        )
    finally:
        meter.close()
        await db.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    limit_concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Requests in progress at once per worker; beyond, 503 `overloaded` "
            "(/healthz, /readyz and /metrics are never refused). Default: no limit.",
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            help="Addresses of the proxies whose X-Forwarded-For and X-Forwarded-Proto are "
            "trusted, comma-separated, or * (default: 127.0.0.1).",
        ),
    ] = None,
    root_path: Annotated[
        str,
        typer.Option(help="The path prefix a proxy serves the API under and strips, e.g. /crm."),
    ] = "",
    as_json: JsonFlag = False,
) -> None:
    """Serve the HTTP API. With --json, one JSON line describes the server and the access log
    is left out, so that standard output holds that line alone; logs go to standard error.
    Refuses to start when the database is missing, unreachable, read-only or not migrated."""
    import uvicorn

    settings = Settings()
    if workers > 1 and not settings.redis_url:
        raise ApiError(
            "--workers > 1 needs CONTACTBASE_REDIS_URL: without Redis each worker would count "
            "rate limits on its own, multiplying every limit by the number of workers."
        )
    problem = asyncio.run(_database_problem(settings))
    if problem is not None:
        raise ApiError(problem.message)
    redis_down = asyncio.run(_redis_problem(settings.redis_url)) if settings.redis_url else None
    shown = async_url(settings.database_url).render_as_string(hide_password=True)
    about = {
        "url": f"http://{host}:{port}",
        "docs": f"http://{host}:{port}/docs",
        "workers": workers,
        "database": shown,
        "redis": settings.redis_url is not None,
    }
    if as_json:
        show(about, as_json)
    else:
        console.print(
            f"contactbase on {about['url']} ({workers} worker(s), database {shown}); "
            f"API docs at {about['docs']}"
        )
    if redis_down is not None:
        errors.print(REDIS_DOWN.format(redis_down), soft_wrap=True, markup=False)
    if settings.public_url is None and host not in LOOPBACK:
        errors.print(UNSET_PUBLIC_URL, soft_wrap=True, markup=False)
    if as_json:
        os.environ["CONTACTBASE_ACCESS_LOG"] = "false"  # read by each worker's Settings
    if limit_concurrency is not None:
        # Enforced by the app's own middleware (JSON 503), not uvicorn's (plain text).
        os.environ["CONTACTBASE_LIMIT_CONCURRENCY"] = str(limit_concurrency)
    uvicorn.run(
        "contactbase.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,  # the app writes its own (middleware.access_line)
        forwarded_allow_ips=forwarded_allow_ips,
        root_path=root_path,
    )


async def _database_problem(settings: Settings) -> Problem | None:
    """What /readyz would answer, asked before the server starts (operations.readiness)."""
    from contactbase.migrations import schema_head
    from contactbase.operations import readiness

    db = Database(settings.database_url, pool_size=1)  # opens nothing until asked
    try:
        return await readiness(db, schema_head())
    finally:
        await db.dispose()


async def _redis_problem(url: str) -> str | None:
    """Why Redis does not answer, or None when it does."""
    client = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    finally:
        await client.aclose()
    return None


REDIS_DOWN = (
    "warning: Redis is unreachable ({}): requests are served without rate limits, and without "
    "their headers, until it answers; start it, or correct CONTACTBASE_REDIS_URL."
)
LOOPBACK = ("127.0.0.1", "::1", "localhost")
UNSET_PUBLIC_URL = (
    "warning: CONTACTBASE_PUBLIC_URL is not set, so links in answers (next_page_url, "
    "download_url) are built from each request's Host header, which clients choose; set it to "
    "the address clients use, e.g. https://contacts.example.com."
)


DEMO_CURL = """curl -s -X POST "$CB/contacts" -H "Authorization: Bearer $KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"emails": ["john@example.com", "johnny@example.com"],
       "phones": ["+1234567890"], "names": ["John Doe"]}'"""


@app.command()
def demo(
    key_file: Annotated[Path, typer.Option(help="Where the demo key is kept between runs.")] = Path(
        ".contactbase-demo-key"
    ),
    url: Annotated[
        str, typer.Option(help="Where the server will answer (make run's HOST and PORT).")
    ] = "http://127.0.0.1:8000",
) -> None:
    """Make sure a demo Space and key exist (for `make run`), and print the line to paste into
    another terminal (the API's address and the key) with a first request."""

    async def ensure(session: AsyncSession) -> tuple[str, bool]:
        if key_file.exists():
            saved = key_file.read_text().strip()
            if await service.key_in_use(session, saved):
                return saved, False
            # Otherwise the database was reset, or the key revoked: make a new one.
        space = await service.create_space(session, "Demo")
        _key, raw_key = await service.create_key(session, space.id, "demo")
        return raw_key, True

    if key_file.is_symlink():  # checked before a key is made for it; O_NOFOLLOW holds anyway
        raise ApiError(f"{key_file} is a symbolic link: give the path of a plain file.")
    raw_key, created = run(ensure)
    if created:
        try:
            write_private(key_file, raw_key + "\n")
        except OSError as exc:
            raise ApiError(f"Cannot write the demo key to {key_file}: {exc.strerror}.") from None
    typer.echo(f"{'Created' if created else 'Using'} the demo Space's API key: {raw_key}")
    typer.echo("Paste this into another terminal, then create your first contact:\n")
    typer.echo(f"export CB={url.rstrip('/')}/public-api/v1 KEY={raw_key}\n")
    typer.echo(DEMO_CURL + "\n")
    typer.echo(f"API docs: {url.rstrip('/')}/docs\n")


def main() -> None:
    logs.install()
    app()

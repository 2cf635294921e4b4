"""`contactbase webhook …`: a Space's webhook endpoints, their secrets and their deliveries."""

from typing import Annotated

import typer

from contactbase.settings import Settings
from contactbase.terminal import JsonFlag, run, show
from contactbase.webhooks import service
from contactbase.webhooks.service import EVENT_TYPES, endpoint_view

webhook_app = typer.Typer(
    help="Send a Space's changes to other systems: endpoints, secrets, deliveries, replays.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
KEEP_SECRET = (
    "Store the secret now: receivers verify signatures with it, and it is not shown again."
)


@webhook_app.command("create")
def webhook_create(
    space_id: int,
    url: Annotated[str, typer.Argument(help="Where to POST the events (http or https).")],
    event: Annotated[
        list[str] | None,
        typer.Option(help=f"Repeatable: {', '.join(EVENT_TYPES)} (default: every type)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Send the Space's events, from now on, to URL. Prints the signing secret once."""
    settings = Settings()
    endpoint, secret = run(
        lambda s: service.create_endpoint(
            s, space_id, url, event or (), allow_private=settings.webhook_allow_private
        )
    )
    show({**endpoint_view(endpoint), "secret": secret}, as_json)
    if not as_json:
        typer.echo(KEEP_SECRET)


@webhook_app.command("list")
def webhook_list(space_id: int, as_json: JsonFlag = False) -> None:
    """List a Space's endpoints, with why any is disabled."""
    endpoints = run(lambda s: service.list_endpoints(s, space_id))
    show([endpoint_view(endpoint) for endpoint in endpoints], as_json, "Webhook endpoints")


@webhook_app.command("enable")
def webhook_enable(endpoint_id: int, as_json: JsonFlag = False) -> None:
    """Deliver again, from the next event on (events of the pause are not sent: see replay)."""
    endpoint = run(lambda s: service.enable(s, endpoint_id))
    show(endpoint_view(endpoint), as_json)


@webhook_app.command("disable")
def webhook_disable(endpoint_id: int, as_json: JsonFlag = False) -> None:
    """Stop delivering; events that occur meanwhile are not queued for it."""
    endpoint = run(lambda s: service.disable(s, endpoint_id))
    show(endpoint_view(endpoint), as_json)


@webhook_app.command("delete")
def webhook_delete(endpoint_id: int, as_json: JsonFlag = False) -> None:
    """Delete an endpoint with its queued messages and its record of attempts."""
    view = run(lambda s: service.delete_endpoint(s, endpoint_id))
    show(view, as_json)


@webhook_app.command("rotate-secret")
def webhook_rotate_secret(endpoint_id: int, as_json: JsonFlag = False) -> None:
    """A new signing secret, printed once; the old one signs beside it for 24 hours
    (CONTACTBASE_WEBHOOK_ROTATION_OVERLAP_SECONDS)."""
    overlap = Settings().webhook_rotation_overlap_seconds
    endpoint, secret = run(lambda s: service.rotate_secret(s, endpoint_id, overlap))
    show({**endpoint_view(endpoint), "secret": secret}, as_json)
    if not as_json:
        typer.echo(KEEP_SECRET)


@webhook_app.command("deliveries")
def webhook_deliveries(
    endpoint_id: int,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The endpoint's latest delivery attempts: event, attempt, status, latency, answer."""
    rows = run(lambda s: service.attempts(s, endpoint_id, limit))
    show(rows, as_json, "Delivery attempts")


@webhook_app.command("replay")
def webhook_replay(
    endpoint_id: int,
    after: Annotated[int, typer.Option(min=0, help="Re-send the events after this seq.")],
    until: Annotated[
        int | None, typer.Option(min=0, help="…up to this seq, included (default: the last).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-send a range of the feed's events to one endpoint, as new messages (new webhook-id)."""
    count = run(lambda s: service.replay(s, endpoint_id, after, until))
    show({"endpoint_id": endpoint_id, "queued": count}, as_json)

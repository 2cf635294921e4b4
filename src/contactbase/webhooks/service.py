"""Webhook endpoints and their messages: the rules the CLI (and later the console) call.

An endpoint receives the events of its Space from the moment it is created (or enabled again):
its cursor starts at the end of the Space's feed. `replay` makes new messages, with new ids, for
a range of events the feed still keeps.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from contactbase.contacts.changes import CREATED, ERASED, MERGED, UPDATED
from contactbase.contacts.models import ChangeCounter, ContactChange
from contactbase.db import utcnow
from contactbase.errors import NotFound, invalid
from contactbase.spaces.service import get_space
from contactbase.webhooks import sending, signing
from contactbase.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

EVENT_TYPES = (CREATED, UPDATED, MERGED, ERASED)
PAGE = 1000  # events read at a time by a fan-out or a replay
DISABLED_BY_HAND = "disabled with `contactbase webhook disable`"


def wire(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def endpoint_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "space_id": endpoint.space_id,
        "url": endpoint.url,
        "events": endpoint.event_types or list(EVENT_TYPES),
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "previous_secret_until": wire(endpoint.previous_secret_until),
        "created_at": wire(endpoint.created_at),
    }


def attempt_view(attempt: WebhookAttempt, message_id: str) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "event_seq": attempt.event_seq,
        "attempt": attempt.attempt,
        "status": attempt.status,
        "error": attempt.error,
        "latency_ms": attempt.latency_ms,
        "response": attempt.response,
        "at": wire(attempt.at),
    }


def check_event_types(event_types: Sequence[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise invalid(
            "event",
            f"Unknown event type {', '.join(map(repr, unknown))}; "
            f"the types are {', '.join(EVENT_TYPES)}.",
        )
    return sorted(set(event_types), key=EVENT_TYPES.index)


async def create_endpoint(
    session: AsyncSession,
    space_id: int,
    url: str,
    event_types: Sequence[str] = (),
    *,
    allow_private: bool = False,
) -> tuple[WebhookEndpoint, str]:
    """A new enabled endpoint and its secret (returned here and never again)."""
    await get_space(session, space_id)
    types = check_event_types(event_types)
    try:
        await sending.check_url(url, allow_private=allow_private)
    except sending.UrlRefused as refused:
        raise invalid("url", str(refused)) from None
    secret = signing.new_secret()
    endpoint = WebhookEndpoint(
        space_id=space_id,
        url=url,
        event_types=types,
        secret=secret,
        enabled=True,
        created_at=utcnow(),
    )
    await _start_from_now(session, endpoint)
    session.add(endpoint)
    await session.flush()
    return endpoint, secret


async def _start_from_now(session: AsyncSession, endpoint: WebhookEndpoint) -> None:
    """Point the endpoint at the end of its Space's feed: past the events numbered, and past
    those committed but not yet numbered (by their row ids, which the numbering follows)."""
    last = await session.scalar(
        select(ChangeCounter.last_seq).where(ChangeCounter.space_id == endpoint.space_id)
    )
    written = await session.scalar(select(func.max(ContactChange.id)))
    endpoint.cursor = int(last or 0)
    endpoint.after_event_id = int(written or 0)


async def list_endpoints(session: AsyncSession, space_id: int) -> Sequence[WebhookEndpoint]:
    await get_space(session, space_id)
    query = select(WebhookEndpoint).where(WebhookEndpoint.space_id == space_id)
    return (await session.scalars(query.order_by(WebhookEndpoint.id))).all()


async def get_endpoint(session: AsyncSession, endpoint_id: int) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"No webhook endpoint with id {endpoint_id}.")
    return endpoint


async def enable(session: AsyncSession, endpoint_id: int) -> WebhookEndpoint:
    """Deliver again, from the feed's end: the events of the pause are not queued."""
    endpoint = await get_endpoint(session, endpoint_id)
    if not endpoint.enabled:
        endpoint.enabled = True
        endpoint.disabled_reason = None
        endpoint.failing_since = None
        await _start_from_now(session, endpoint)
        await session.flush()
    return endpoint


async def disable(session: AsyncSession, endpoint_id: int) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, endpoint_id)
    if endpoint.enabled:
        endpoint.enabled = False
        endpoint.disabled_reason = DISABLED_BY_HAND
        await session.flush()
    return endpoint


async def delete_endpoint(session: AsyncSession, endpoint_id: int) -> dict[str, Any]:
    """Delete it with its messages and attempts; what it was, as a view."""
    endpoint = await get_endpoint(session, endpoint_id)
    view = endpoint_view(endpoint)
    await session.delete(endpoint)
    await session.flush()
    return view


async def rotate_secret(
    session: AsyncSession, endpoint_id: int, overlap_seconds: int
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the one it replaces signs beside it for `overlap_seconds`."""
    endpoint = await get_endpoint(session, endpoint_id)
    secret = signing.new_secret()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = utcnow() + timedelta(seconds=overlap_seconds)
    endpoint.secret = secret
    await session.flush()
    return endpoint, secret


async def attempts(session: AsyncSession, endpoint_id: int, limit: int) -> list[dict[str, Any]]:
    """The endpoint's latest attempts, newest first."""
    await get_endpoint(session, endpoint_id)
    rows = await session.execute(
        select(WebhookAttempt, WebhookDelivery.message_id)
        .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
        .where(WebhookAttempt.endpoint_id == endpoint_id)
        .order_by(WebhookAttempt.id.desc())
        .limit(limit)
    )
    return [attempt_view(attempt, message_id) for attempt, message_id in rows.all()]


async def replay(
    session: AsyncSession, endpoint_id: int, after: int, until: int | None = None
) -> int:
    """New messages for the endpoint's events in (after, until], as it subscribes to them;
    their count. Sent once the endpoint is enabled."""
    endpoint = await get_endpoint(session, endpoint_id)
    purged = await session.scalar(
        select(ChangeCounter.purged_through).where(ChangeCounter.space_id == endpoint.space_id)
    )
    if purged and after < purged:
        raise invalid(
            "after",
            f"The events up to {purged} are no longer kept (CONTACTBASE_CHANGES_RETENTION_"
            f"SECONDS); replay with --after {purged} or later.",
        )
    made = 0
    while events := await events_after(session, endpoint.space_id, after, until):
        made += await queue_messages(session, endpoint, events, utcnow())
        after = events[-1].seq
    return made


async def events_after(
    session: AsyncSession, space_id: int, after: int, until: int | None = None
) -> list[signing.Event]:
    """A page of the Space's numbered events after `after` (up to `until`), in order."""
    query = (
        select(
            ContactChange.id,
            ContactChange.seq,
            ContactChange.type,
            ContactChange.contact_id,
            ContactChange.merged_into,
            ContactChange.occurred_at,
        )
        .where(ContactChange.space_id == space_id, ContactChange.seq > after)
        .order_by(ContactChange.seq)
        .limit(PAGE)
    )
    if until is not None:
        query = query.where(ContactChange.seq <= until)
    return [signing.Event._make(row) for row in (await session.execute(query)).all()]


async def queue_messages(
    session: AsyncSession,
    endpoint: WebhookEndpoint,
    events: Sequence[signing.Event],
    now: datetime,
    *,
    written_after: int = 0,
) -> int:
    """A message, due now, for each of `events` the endpoint subscribes to (of those written
    after the event `written_after`); their count."""
    wanted = set(endpoint.event_types or EVENT_TYPES)
    rows = [
        {
            "endpoint_id": endpoint.id,
            "space_id": endpoint.space_id,
            "message_id": signing.new_message_id(),
            "event_seq": event.seq,
            "body": signing.message_body(event),
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for event in events
        if event.type in wanted and event.id > written_after
    ]
    if rows:
        await session.execute(insert(WebhookDelivery), rows)
    return len(rows)

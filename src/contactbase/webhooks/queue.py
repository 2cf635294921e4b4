"""The delivery queue, in the database: what makes webhooks at least once.

- **Fan-out.** A worker that finds a Space with new events (unnumbered, or past an enabled
  endpoint's cursor) numbers them (contacts/changes.py), then, holding the Space's enabled
  endpoints' rows (`FOR UPDATE SKIP LOCKED`; SQLite's single writer), turns the events past each
  cursor into messages and moves the cursor, in one transaction: an event becomes a message
  once per endpoint, whichever worker gets there, and a crash between the two writes is
  impossible.
- **Claims.** A worker claims due messages endpoint by endpoint, holding the endpoint's row
  while it counts the endpoint's messages in flight, so that at most `per_endpoint` are in
  flight for one endpoint across every process. A claim leases the message (`leased_until`,
  past the timeout) and numbers the attempt; a worker that dies mid-attempt leaves a lease that
  runs out, and the message is due again.
- **Outcomes.** A 2xx delivers the message. Anything else schedules the next attempt (the retry
  schedule, with jitter) or, the schedule spent, fails it; a 410 disables the endpoint, and so
  do failures without a success for `disable_after`. An outcome is written only under the
  claim that made the attempt (its attempt number), so a stale worker cannot undo a newer one.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, delete, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from contactbase.contacts import changes
from contactbase.contacts.models import ContactChange
from contactbase.db import Database, Lease, utcnow
from contactbase.prepared import Connection
from contactbase.settings import Settings
from contactbase.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from contactbase.webhooks.sending import Answer
from contactbase.webhooks.service import events_after, queue_messages, wire

# Pages of events one fan-out turns into messages per Space, before it lets others have a turn.
FAN_OUT_PAGES = 10
LEASE_MARGIN = timedelta(seconds=5)
JITTER = (0.8, 1.2)

Endpoint = WebhookEndpoint
Message = WebhookDelivery


def _news() -> object:
    """Spaces with an enabled endpoint and events it has not had (or not yet numbered)."""
    unnumbered = exists().where(
        ContactChange.space_id == Endpoint.space_id, ContactChange.seq.is_(None)
    )
    past_cursor = exists().where(
        ContactChange.space_id == Endpoint.space_id, ContactChange.seq > Endpoint.cursor
    )
    return (
        select(Endpoint.space_id)
        .where(Endpoint.enabled.is_(True), unnumbered | past_cursor)
        .group_by(Endpoint.space_id)
    )


NEWS = _news()


async def fan_out(db: Database) -> int:
    """Messages for every enabled endpoint's new events; how many were made."""
    async with db.reader() as session, session.begin():
        spaces = list((await session.scalars(NEWS)).all())  # type: ignore[call-overload]
    made = 0
    for space_id in spaces:
        await _number(db, space_id)
        async with db.writer() as session, session.begin():
            made += await _fan_out_space(session, space_id)
    return made


async def _number(db: Database, space_id: int) -> None:
    lease = Lease(db)
    failure: BaseException | None = None

    async def work(connection: Connection) -> None:
        await changes.number_committed(connection, space_id)

    try:
        await lease.write(work)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        await lease.release(failure)


async def _fan_out_space(session: AsyncSession, space_id: int) -> int:
    endpoints = await session.scalars(
        select(Endpoint)
        .where(Endpoint.space_id == space_id, Endpoint.enabled.is_(True))
        .order_by(Endpoint.id)
        .with_for_update(skip_locked=True)
    )
    made = 0
    now = utcnow()
    for endpoint in endpoints.all():
        for _page in range(FAN_OUT_PAGES):
            events = await events_after(session, space_id, endpoint.cursor)
            if not events:
                break
            made += await queue_messages(
                session, endpoint, events, now, written_after=endpoint.after_event_id
            )
            endpoint.cursor = events[-1].seq
            await session.flush()
    return made


@dataclass(frozen=True)
class Claim:
    """A message leased to this worker for one attempt."""

    id: int
    endpoint_id: int
    url: str
    secrets: tuple[str, ...]
    message_id: str
    event_seq: int
    body: bytes
    attempt: int


async def claim(db: Database, room: int, settings: Settings) -> list[Claim]:
    """Lease up to `room` due messages, at most `webhook_in_flight_per_endpoint` in flight per
    endpoint, the endpoints in random order (none first every time)."""
    now = utcnow()
    pending = and_(Message.endpoint_id == Endpoint.id, Message.state == "pending")
    # A leased message is due at its lease's end, so the messages in flight are among those
    # due later: a range of the due index, not every pending message.
    in_flight = (
        select(func.count())
        .where(pending, Message.next_attempt_at > now, Message.leased_until > now)
        .correlate(Endpoint)
        .scalar_subquery()
    )
    due = exists().where(pending, Message.next_attempt_at <= now)
    claims: list[Claim] = []
    async with db.writer() as session, session.begin():
        endpoints = (
            await session.execute(
                select(Endpoint, in_flight)
                .where(Endpoint.enabled.is_(True), due)
                .order_by(func.random())
                .limit(room)
                .with_for_update(skip_locked=True, of=Endpoint)
            )
        ).all()
        for endpoint, busy in endpoints:
            take = min(settings.webhook_in_flight_per_endpoint - busy, room - len(claims))
            if take > 0:
                connection = await session.connection()
                claims += await _lease(connection, _target(endpoint), take, now, settings)
    return claims


class Target(NamedTuple):
    """What sending to an endpoint needs of it, and what an attempt's outcome changes."""

    id: int
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None
    enabled: bool
    failing_since: datetime | None


TARGET = select(
    Endpoint.id,
    Endpoint.url,
    Endpoint.secret,
    Endpoint.previous_secret,
    Endpoint.previous_secret_until,
    Endpoint.enabled,
    Endpoint.failing_since,
)


def _target(endpoint: Endpoint) -> Target:
    return Target(*(getattr(endpoint, column.name) for column in TARGET.selected_columns))


async def _lease(
    connection: AsyncConnection, endpoint: Target, take: int, now: datetime, settings: Settings
) -> list[Claim]:
    """Lease the endpoint's `take` oldest due messages (each counted as an attempt), skipping
    any another transaction is leasing this moment. Core statements on a connection: the
    ORM's bookkeeping of an UPDATE cost more than the statement itself."""
    lease_until = now + timedelta(seconds=settings.webhook_timeout_seconds) + LEASE_MARGIN
    oldest = (
        select(Message.id)
        .where(
            Message.endpoint_id == endpoint.id,
            Message.state == "pending",
            Message.next_attempt_at <= now,
        )
        .order_by(Message.next_attempt_at, Message.id)
        .limit(take)
        .with_for_update(skip_locked=True)
    )
    rows = await connection.execute(
        update(Message)
        .where(Message.id.in_(oldest.scalar_subquery()))
        .values(
            attempts=Message.attempts + 1, leased_until=lease_until, next_attempt_at=lease_until
        )
        .returning(
            Message.id, Message.message_id, Message.event_seq, Message.body, Message.attempts
        )
    )
    signing_secrets = _secrets(endpoint, now)
    return [
        Claim(
            row.id,
            endpoint.id,
            endpoint.url,
            signing_secrets,
            row.message_id,
            row.event_seq,
            row.body.encode(),
            row.attempts,
        )
        for row in rows.all()
    ]


def _secrets(endpoint: Target, now: datetime) -> tuple[str, ...]:
    """The secrets that sign now: the current one, and the one it replaced while it overlaps."""
    until = endpoint.previous_secret_until
    if endpoint.previous_secret and until is not None and until > now:
        return (endpoint.secret, endpoint.previous_secret)
    return (endpoint.secret,)


async def record(
    db: Database, done: Claim, answer: Answer, settings: Settings, *, then_next: bool = False
) -> Claim | None:
    """The attempt, and what follows from it for the message and its endpoint; with
    `then_next`, in the same transaction, the lease of the endpoint's next due message, which
    takes over the attempt's place among the endpoint's messages in flight (None when there is
    none, or the endpoint is disabled or gone)."""
    now = utcnow()
    async with db.writer_engine.begin() as connection:
        found = (await connection.execute(TARGET.where(Endpoint.id == done.endpoint_id))).first()
        if found is None:
            return None  # deleted meanwhile, with its messages
        endpoint = Target(*found)
        await connection.execute(
            insert(WebhookAttempt).values(
                delivery_id=done.id,
                endpoint_id=done.endpoint_id,
                event_seq=done.event_seq,
                attempt=done.attempt,
                status=answer.status,
                error=answer.error,
                latency_ms=answer.latency_ms,
                response=answer.response or None,
                at=now,
            )
        )
        ours = and_(
            Message.id == done.id, Message.attempts == done.attempt, Message.state == "pending"
        )
        settled = update(Message).where(ours).values(leased_until=None)
        changes: dict[str, Any] = {}
        if answer.ok:
            await connection.execute(settled.values(state="delivered"))
            if endpoint.failing_since is not None:
                changes = {"failing_since": None}
        else:
            delays = settings.webhook_retry_delays
            if done.attempt > len(delays):
                await connection.execute(settled.values(state="failed"))
            else:
                delay = delays[done.attempt - 1] * random.uniform(*JITTER)
                later = now + timedelta(seconds=delay)
                await connection.execute(settled.values(next_attempt_at=later))
            if endpoint.enabled:
                disable_after = settings.webhook_disable_after_seconds
                changes = _after_failure(endpoint, answer, now, disable_after)
        if changes:
            await connection.execute(
                update(Endpoint).where(Endpoint.id == endpoint.id).values(**changes)
            )
            endpoint = endpoint._replace(enabled=changes.get("enabled", endpoint.enabled))
        if not (then_next and endpoint.enabled):
            return None
        following = await _lease(connection, endpoint, 1, now, settings)
        return following[0] if following else None


def _after_failure(
    endpoint: Target, answer: Answer, now: datetime, disable_after: int
) -> dict[str, Any]:
    """What a failed attempt changes of its (enabled) endpoint."""
    if answer.status == 410:
        reason = f"the endpoint answered 410 Gone at {wire(now)}"
        return {"enabled": False, "disabled_reason": reason}
    since = endpoint.failing_since or now
    changes: dict[str, Any] = {} if endpoint.failing_since else {"failing_since": now}
    if now - since >= timedelta(seconds=disable_after):
        reason = f"every attempt failed from {wire(since)} to {wire(now)}"
        changes |= {"enabled": False, "disabled_reason": reason}
    return changes


async def sweep(db: Database, retention_seconds: int) -> None:
    """Delete the messages settled (delivered or failed) before the retention, with their
    attempts."""
    cutoff = utcnow() - timedelta(seconds=retention_seconds)
    async with db.writer() as session, session.begin():
        await session.execute(
            delete(Message).where(Message.state != "pending", Message.created_at < cutoff)
        )

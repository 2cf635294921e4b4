"""After the load: wait until every event of the change feed has reached the webhook receiver,
then hold what it heard to the feed and to the delivery queue, read directly from the database.

The expected events are the rows of `contact_changes` of each Space with an endpoint: the
endpoint was created before the first write, so every event of the feed is owed to it, once
numbered (the webhook fan-out numbers them itself; an event still without a `seq` at the end
counts as missing). Webhooks are at least once: an event heard twice is a duplicate, allowed;
heard under two `webhook-id`s it was made into two messages, which a receiver that deduplicates
by id cannot tell apart, and which the queue promises never to do.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from receiver import EXAMPLES, Heard, Receiver

POLL = 0.5  # seconds between two looks at the feed while waiting
PROGRESS = 10.0  # seconds between two lines of progress while waiting
DETAILS = 10  # missing events described in full in the report


@dataclass
class Delivery:
    """Every event of the watched Spaces against what the receiver heard."""

    events: int = 0  # rows in the feed, numbered or not
    unnumbered: int = 0  # of which still without a seq
    delivered: int = 0  # distinct events heard
    duplicates: int = 0  # messages heard beyond the first of each event
    waited: float = 0.0  # seconds from the load's end until all were heard (or the limit)
    heard_before: int = 0  # distinct events heard by the time the wait began
    missing: list[tuple[int, int]] = field(default_factory=list)  # (Space, seq)
    problems: Counter[str] = field(default_factory=Counter)  # what fails the run
    examples: dict[str, list[str]] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)  # the queue's state, for the report
    details: list[str] = field(default_factory=list)  # each missing event's messages, attempts

    @property
    def missing_count(self) -> int:
        return len(self.missing) + self.unnumbered


async def await_delivery(
    url: str, receiver: Receiver, space_ids: list[int], stall: float, limit: float
) -> Delivery:
    """Wait until every event has been heard, or none more for `stall` seconds, or `limit`
    seconds in all; then compare. (The backlog left by the load drains at the worker's pace,
    so a fixed bound would fail a slow machine's run for its speed rather than for a loss.)"""
    began = shown = progressed = time.monotonic()
    before = sum(len(seqs) for seqs in receiver.snapshot().times.values())
    fewest = None
    connection = await asyncpg.connect(url)
    try:
        while True:
            feed, unnumbered = await numbered(connection, space_ids)
            heard = receiver.snapshot()
            owed = [event for event in feed if event[1] not in heard.times.get(event[0], {})]
            now = time.monotonic()
            if fewest is None or len(owed) + unnumbered < fewest:
                fewest, progressed = len(owed) + unnumbered, now
            if not fewest or now - progressed >= stall or now - began >= limit:
                break
            if now - shown >= PROGRESS:
                shown = time.monotonic()
                print(
                    f"    waiting for webhooks: {len(owed)} of {len(feed)} numbered events not "
                    f"heard yet, {unnumbered} not numbered",
                    flush=True,
                )
            await asyncio.sleep(POLL)
        delivery = Delivery(waited=time.monotonic() - began, heard_before=before)
        await compare(connection, space_ids, heard, delivery)
        await describe_queue(connection, space_ids, heard, delivery)
    finally:
        await connection.close()
    return delivery


async def numbered(
    connection: asyncpg.Connection, space_ids: list[int]
) -> tuple[list[tuple[int, int]], int]:
    """The feed's numbered events (Space, seq), and how many are not numbered yet."""
    rows = await connection.fetch(
        "SELECT space_id, seq FROM contact_changes WHERE space_id = ANY($1)", space_ids
    )
    feed = [(row["space_id"], row["seq"]) for row in rows if row["seq"] is not None]
    return feed, len(rows) - len(feed)


async def compare(
    connection: asyncpg.Connection, space_ids: list[int], heard: Heard, delivery: Delivery
) -> None:
    """Each event heard, at least once, under one message id, as the feed has it."""
    rows = await connection.fetch(
        "SELECT space_id, seq, type, contact_id, merged_into FROM contact_changes "
        "WHERE space_id = ANY($1) ORDER BY space_id, seq",
        space_ids,
    )
    problems = Counter(heard.problems)  # bad signatures, malformed messages
    examples = {kind: list(found) for kind, found in heard.examples.items()}

    def note(kind: str, example: str) -> None:
        problems[kind] += 1
        examples.setdefault(kind, [])
        if len(examples[kind]) < EXAMPLES:
            examples[kind].append(example)

    feed: set[tuple[int, int]] = set()
    for row in rows:
        delivery.events += 1
        if row["seq"] is None:
            delivery.unnumbered += 1
            continue
        space, seq = row["space_id"], row["seq"]
        feed.add((space, seq))
        times = heard.times.get(space, Counter())[seq]
        if not times:
            delivery.missing.append((space, seq))
            continue
        delivery.delivered += 1
        delivery.duplicates += times - 1
        if len(ids := heard.message_ids[space][seq]) > 1:
            note("event sent as several messages", f"space {space} seq {seq}: {sorted(ids)}")
        data = heard.data[space][seq]
        sent = (data.get("type"), data.get("contact_id"), data.get("merged_into"))
        if sent != (row["type"], row["contact_id"], row["merged_into"]):
            stored = (row["type"], row["contact_id"], row["merged_into"])
            note("message differs from the feed's event", f"seq {seq}: {sent} != {stored}")
    for space, seqs in heard.times.items():
        for seq in seqs:
            if (space, seq) not in feed:
                note("message for an event not in the feed", f"space {space} seq {seq}")
    delivery.problems = problems
    delivery.examples = examples


async def describe_queue(
    connection: asyncpg.Connection, space_ids: list[int], heard: Heard, delivery: Delivery
) -> None:
    """The endpoints, the messages by state, the attempts by outcome (the first failed ones in
    full), the receiver's notes; and, when events are missing, the database's open transactions
    and the first missing events with their messages and every attempt (what a bug report
    needs)."""
    for row in await connection.fetch(
        "SELECT id, space_id, enabled, disabled_reason, cursor FROM webhook_endpoints "
        "WHERE space_id = ANY($1) ORDER BY id",
        space_ids,
    ):
        state = "enabled" if row["enabled"] else f"disabled ({row['disabled_reason']})"
        delivery.queue.append(
            f"endpoint {row['id']} of Space {row['space_id']}: {state}, cursor {row['cursor']}"
        )
    states = await connection.fetch(
        "SELECT state, count(*) AS n, max(attempts) AS most FROM webhook_deliveries "
        "WHERE space_id = ANY($1) GROUP BY state ORDER BY state",
        space_ids,
    )
    messages = ", ".join(f"{r['state']}: {r['n']} (up to {r['most']} attempts)" for r in states)
    delivery.queue.append(f"messages: {messages or 'none'}")
    outcomes = await connection.fetch(
        "SELECT coalesce(a.status::text, a.error) AS outcome, count(*) AS n "
        "FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id "
        "WHERE d.space_id = ANY($1) GROUP BY 1 ORDER BY 2 DESC LIMIT 8",
        space_ids,
    )
    recorded = ", ".join(f"{r['outcome']}: {r['n']}" for r in outcomes)
    heard_total = sum(sum(seqs.values()) for seqs in heard.times.values())
    delivery.queue.append(
        f"attempts recorded: {recorded or 'none'}; messages heard by the receiver: {heard_total}"
    )
    for note, n in heard.notes.most_common():
        delivery.queue.append(f"receiver: {note} x{n}")
    for attempt in await connection.fetch(
        "SELECT d.message_id, a.event_seq, a.attempt, a.status, a.error, a.latency_ms, a.at "
        "FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id "
        "WHERE d.space_id = ANY($1) AND (a.status IS NULL OR a.status NOT BETWEEN 200 AND 299) "
        "ORDER BY a.id LIMIT $2",
        space_ids,
        DETAILS,
    ):
        delivery.queue.append(f"failed attempt {plain(attempt)}")
    if delivery.missing_count:
        delivery.details += await describe_sessions(connection)
    for space, seq in delivery.missing[:DETAILS]:
        delivery.details.append(await describe_event(connection, space, seq))


async def describe_sessions(connection: asyncpg.Connection) -> list[str]:
    """The database's other sessions in a transaction: one left open, or waiting for a lock, is
    the usual reason a queue in the database stands still."""
    rows = await connection.fetch(
        "SELECT pid, state, wait_event_type, wait_event, now() - xact_start AS in_transaction, "
        "left(query, 120) AS query, "
        "(SELECT string_agg(DISTINCT l.relation::regclass::text, ' ') FROM pg_locks l "
        " WHERE l.pid = a.pid AND l.granted AND l.mode = 'RowShareLock') AS row_locks "
        "FROM pg_stat_activity a WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND xact_start IS NOT NULL ORDER BY xact_start"
    )
    idle = await connection.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start IS NULL"
    )
    return [f"session {plain(row)}" for row in rows] + [f"{idle} sessions outside a transaction"]


def plain(row: Mapping[str, Any]) -> str:
    """A row on one line, times as ISO text and durations in seconds."""

    def shown(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat(timespec="milliseconds")
        if isinstance(value, timedelta):
            return f"{value.total_seconds():.3f} s"
        return value

    return str({key: shown(value) for key, value in row.items()})


async def describe_event(connection: asyncpg.Connection, space: int, seq: int) -> str:
    """One missing event: its row, its messages and their attempts."""
    event = await connection.fetchrow(
        "SELECT id, type, contact_id, occurred_at FROM contact_changes "
        "WHERE space_id = $1 AND seq = $2",
        space,
        seq,
    )
    lines = [f"Space {space} seq {seq}: {plain(event) if event else 'gone'}"]
    messages = await connection.fetch(
        "SELECT id, message_id, state, attempts, next_attempt_at, leased_until, created_at "
        "FROM webhook_deliveries WHERE space_id = $1 AND event_seq = $2 ORDER BY id",
        space,
        seq,
    )
    if not messages:
        lines.append("      no message was made for it")
    for message in messages:
        lines.append(f"      message {plain(message)}")
        for attempt in await connection.fetch(
            "SELECT attempt, status, error, latency_ms, at FROM webhook_attempts "
            "WHERE delivery_id = $1 ORDER BY id",
            message["id"],
        ):
            lines.append(f"        attempt {plain(attempt)}")
    return "\n".join(lines)

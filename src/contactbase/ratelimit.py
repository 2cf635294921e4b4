"""Per-Space, per-endpoint request limits in a fixed window that starts with its first counted
request (as Laravel, and so Cometly, counts), shared through Redis or kept in memory."""

import asyncio
import logging
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import RedisError, ResponseError

ENDPOINTS = ("create", "get", "list", "update", "export", "batch", "delete", "changes")
# Requests per minute, per Space, unless the Space overrides them (`contactbase space set-limit`).
DEFAULT_LIMITS = {
    **{"create": 60, "get": 30, "list": 15, "update": 60, "export": 5},
    **{"batch": 10, "delete": 60, "changes": 60},
}
# After Redis fails, requests go unlimited without trying it again for this long.
REDIS_RETRY_SECONDS = 1.0
# Longest wait for Redis (connecting included) before a request goes unlimited.
REDIS_TIMEOUT_SECONDS = 0.5

log = logging.getLogger("contactbase.ratelimit")


@dataclass(frozen=True)
class Decision:
    """The outcome of counting one request."""

    endpoint: str
    limit: int
    count: int  # requests counted in the window, this one included when allowed
    reset_seconds: float  # until the window ends
    allowed: bool
    window_seconds: int = 60
    # The mark of the last administrative change (spaces/keycache.py), read in the same round trip;
    # None when the store keeps no marks (memory).
    change_mark: bytes | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def retry_after(self) -> int:
        """Whole seconds until the window ends, at least 1: waiting that long lets a request in."""
        return max(1, math.ceil(self.reset_seconds))

    def headers(self) -> list[tuple[bytes, bytes]]:
        # The IETF draft fields (draft-ietf-httpapi-ratelimit-headers-10) beside Laravel's.
        fields = [
            ("X-RateLimit-Limit", str(self.limit)),
            ("X-RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Policy", f'"{self.endpoint}";q={self.limit};w={self.window_seconds}'),
            ("RateLimit", f'"{self.endpoint}";r={self.remaining};t={self.retry_after}'),
        ]
        if not self.allowed:
            fields.append(("Retry-After", str(self.retry_after)))
        return [(name.lower().encode(), value.encode()) for name, value in fields]


Counted = tuple[int, float, bool, bytes | None]
CHANGE_MARK_KEY = b"contactbase:changed"


class Counters(Protocol):
    """Where the windows' counts live."""

    async def count(self, key: str, limit: int, window_seconds: int) -> Counted:
        """Count one request if the window has room: (count, seconds left, allowed, the mark
        of the last administrative change or None)."""
        ...

    async def change_mark(self) -> bytes | None:
        """The mark of the last administrative change, alone (None: no mark is kept)."""
        ...

    async def close(self) -> None: ...


class MemoryCounters:
    """Counts of this process alone: right for a single worker."""

    def __init__(self) -> None:
        self.windows: dict[str, tuple[int, float]] = {}

    async def count(self, key: str, limit: int, window_seconds: int) -> Counted:
        # No await in here: under asyncio the read and the write are one atomic step.
        now = time.monotonic()
        count, ends = self.windows.get(key, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window_seconds
        if count >= limit:
            # A limit of 0 refuses without opening a window, as the Redis script does.
            return count, (ends - now) if count else 0.0, False, None
        self.windows[key] = (count + 1, ends)
        return count + 1, ends - now, True, None

    async def change_mark(self) -> bytes | None:
        return None

    async def close(self) -> None:
        self.windows.clear()


# Check and count in one atomic step and one round trip; a refused request is not counted.
# The mark of the last administrative change (KEYS[2]) comes back with the count. Where none
# is kept yet (a new or flushed Redis), a mark never used before is set (ARGV[3]), so that no
# mark of before a flush can come back and vouch for a key read before it.
COUNT_SCRIPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
local mark = redis.call('GET', KEYS[2])
if not mark then
  mark = ARGV[3]
  redis.call('SET', KEYS[2], mark)
end
if count >= tonumber(ARGV[1]) then
  return {count, ttl, 0, mark}
end
count = redis.call('INCR', KEYS[1])
if count == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {count, ttl, 1, mark}
"""


def new_change_mark() -> bytes:
    """A mark of an administrative change that was never used before."""
    return uuid.uuid4().hex.encode()


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


# EVAL with the script text each time: no NOSCRIPT round trip after a Redis restart, and Redis
# caches the compiled script by its digest anyway.
_EVAL_PREFIX = b"*8\r\n" + _bulk(b"EVAL") + _bulk(COUNT_SCRIPT.encode()) + _bulk(b"2")
# The mark alone, set as the count does when none is kept.
MARK_SCRIPT = """
local mark = redis.call('GET', KEYS[1])
if not mark then
  mark = ARGV[1]
  redis.call('SET', KEYS[1], mark)
end
return mark
"""
_MARK_PREFIX = b"*5\r\n" + _bulk(b"EVAL") + _bulk(MARK_SCRIPT.encode()) + _bulk(b"1")


class RedisCounters:
    """Counts shared by every worker and host that uses the same Redis.

    One connection per process, driven by one sender task: the counts asked for while it is
    busy go to Redis together in its next write, and their replies are read in order
    (pipelining). Against redis-py's per-command path (pool, packing, a timeout per read) this
    costs a fraction of the CPU per request (docs/performance.md).
    """

    def __init__(self, url: str) -> None:
        # The pool only makes the connection (URL options, TLS, AUTH, SELECT); it is not pooled.
        self.pool = ConnectionPool.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        self.connection: AbstractConnection | None = None
        self.sender: asyncio.Task[None] | None = None
        self.waiting: list[tuple[bytes, asyncio.Future[Any]]] = []

    async def count(self, key: str, limit: int, window_seconds: int) -> Counted:
        command = (
            _EVAL_PREFIX
            + _bulk(f"contactbase:rl:{key}".encode())
            + _bulk(CHANGE_MARK_KEY)
            + _bulk(b"%d" % limit)
            + _bulk(b"%d" % (window_seconds * 1000))
            + _bulk(new_change_mark())
        )
        count, ttl_ms, allowed, mark = await self._ask(command)
        return int(count), max(int(ttl_ms), 0) / 1000, bool(allowed), mark

    async def change_mark(self) -> bytes | None:
        mark: bytes = await self._ask(
            _MARK_PREFIX + _bulk(CHANGE_MARK_KEY) + _bulk(new_change_mark())
        )
        return mark

    async def _ask(self, command: bytes) -> Any:
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((command, reply))
        # The exchange runs in a task of its own, not in a request's: a request cancelled while
        # it waits cannot cut a batch short (between two awaits, a running sender is either
        # inside an exchange, and will take this count next, or finished).
        if self.sender is None or self.sender.done():
            self.sender = asyncio.create_task(self._send_waiting())
        return await reply

    async def _send_waiting(self) -> None:
        """Send the counts waiting, in batches, until none is left."""
        while self.waiting:
            batch, self.waiting = self.waiting, []
            await self._exchange(batch)

    async def _exchange(self, batch: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        finished = False
        failure: BaseException | None = None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                connection = self.connection
                if connection is None:
                    connection = self.connection = self.pool.make_connection()  # type: ignore[no-untyped-call]
                    await connection.connect()
                await connection.send_packed_command(
                    b"".join(command for command, _ in batch), check_health=False
                )
                for _, reply in batch:
                    # Every reply is read, even for a request that was cancelled meanwhile
                    # (its future is then done already), to keep the connection in step.
                    try:
                        answer = await connection.read_response(timeout=math.inf)
                    except ResponseError as exc:  # that count alone failed
                        if not reply.done():
                            reply.set_exception(exc)
                        continue
                    if not reply.done():
                        reply.set_result(answer)
            finished = True
        except (RedisError, OSError, TimeoutError) as exc:
            failure = exc
        finally:
            # Failed, timed out or cancelled half-way: the connection's state is unknown, so it
            # goes, and every count of the batch still waiting fails (its request goes unlimited).
            if not finished:
                if self.connection is not None:
                    await self.connection.disconnect(nowait=True)
                    self.connection = None
                for _, reply in batch:
                    if not reply.done():
                        reply.set_exception(ConnectionError(f"Redis unavailable: {failure!r}"))

    async def close(self) -> None:
        if self.sender is not None:
            await self.sender
        if self.connection is not None:
            await self.connection.disconnect()
            self.connection = None
        await self.pool.aclose()


class RateLimiter:
    """Counts requests per Space and endpoint; fails open while its store is unreachable."""

    def __init__(self, counters: Counters, window_seconds: int = 60) -> None:
        self.counters = counters
        # Shared counters carry the mark of the last administrative change (access.KeyCache).
        self.keeps_marks = isinstance(counters, RedisCounters)
        self.window_seconds = window_seconds
        self.unavailable_until = 0.0
        self.in_outage = False

    async def hit(self, space_id: int, endpoint: str, limit: int) -> Decision | None:
        """Count a request; None when it could not be counted (the store is down)."""
        if time.monotonic() < self.unavailable_until:
            return None
        try:
            count, reset, allowed, mark = await self.counters.count(
                f"{space_id}:{endpoint}", limit, self.window_seconds
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self._answered()
        return Decision(endpoint, limit, count, reset, allowed, self.window_seconds, mark)

    async def change_mark(self) -> bytes | None:
        """The mark of the last administrative change; None when the store keeps none or
        cannot be reached."""
        if time.monotonic() < self.unavailable_until:
            return None
        try:
            mark = await self.counters.change_mark()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self._answered()
        return mark

    def _failed(self, exc: BaseException) -> None:
        self.unavailable_until = time.monotonic() + REDIS_RETRY_SECONDS
        if not self.in_outage:
            self.in_outage = True
            log.warning("rate-limit store unreachable, serving without limits: %r", exc)

    def _answered(self) -> None:
        if self.in_outage:
            self.in_outage = False
            log.warning("rate-limit store reachable again, limits apply")

    async def close(self) -> None:
        await self.counters.close()


def build_limiter(redis_url: str | None, window_seconds: int = 60) -> RateLimiter:
    counters: Counters = RedisCounters(redis_url) if redis_url else MemoryCounters()
    return RateLimiter(counters, window_seconds)


async def mark_change(redis_url: str) -> None:
    """Tell every server sharing this Redis that an administrative change was made (a key
    revoked, a Space deactivated or activated, a limit changed): their cached keys are read
    again at their next request."""
    client = Redis.from_url(redis_url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
    try:
        await client.set(CHANGE_MARK_KEY, new_change_mark())
    finally:
        await client.aclose()

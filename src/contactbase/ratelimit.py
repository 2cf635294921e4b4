"""Per-Space, per-endpoint request limits in a fixed window that starts with its first counted
request (as Laravel, and so Cometly, counts), shared through Redis or kept in memory."""

import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

ENDPOINTS = ("create", "get", "list", "update", "export")
# Requests per minute, per Space, unless the Space overrides them (`contactbase space set-limit`).
DEFAULT_LIMITS = {"create": 60, "get": 30, "list": 15, "update": 60, "export": 5}
# After Redis fails, requests go unlimited without trying it again for this long.
REDIS_RETRY_SECONDS = 1.0

log = logging.getLogger("contactbase.ratelimit")


@dataclass(frozen=True)
class Decision:
    """The outcome of counting one request."""

    endpoint: str
    limit: int
    count: int  # requests counted in the window, this one included when allowed
    reset_seconds: float  # until the window ends
    allowed: bool

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
            ("RateLimit-Policy", f'"{self.endpoint}";q={self.limit};w=60'),
            ("RateLimit", f'"{self.endpoint}";r={self.remaining};t={self.retry_after}'),
        ]
        if not self.allowed:
            fields.append(("Retry-After", str(self.retry_after)))
        return [(name.lower().encode(), value.encode()) for name, value in fields]


class Counters(Protocol):
    """Where the windows' counts live."""

    async def count(self, key: str, limit: int, window_seconds: int) -> tuple[int, float, bool]:
        """Count one request if the window has room: (count, seconds left, allowed)."""
        ...

    async def close(self) -> None: ...


class MemoryCounters:
    """Counts of this process alone: right for a single worker."""

    def __init__(self) -> None:
        self.windows: dict[str, tuple[int, float]] = {}

    async def count(self, key: str, limit: int, window_seconds: int) -> tuple[int, float, bool]:
        # No await in here: under asyncio the read and the write are one atomic step.
        now = time.monotonic()
        count, ends = self.windows.get(key, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window_seconds
        if count >= limit:
            return count, ends - now, False
        self.windows[key] = (count + 1, ends)
        return count + 1, ends - now, True

    async def close(self) -> None:
        self.windows.clear()


# Check and count in one atomic step and one round trip; a refused request is not counted.
COUNT_SCRIPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if count >= tonumber(ARGV[1]) then
  return {count, ttl, 0}
end
count = redis.call('INCR', KEYS[1])
if count == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {count, ttl, 1}
"""


class RedisCounters:
    """Counts shared by every worker and host that uses the same Redis."""

    def __init__(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=0.5, retry_on_timeout=False
        )
        self.script = self.client.register_script(COUNT_SCRIPT)

    async def count(self, key: str, limit: int, window_seconds: int) -> tuple[int, float, bool]:
        count, ttl_ms, allowed = await self.script(
            keys=[f"contactbase:rl:{key}"], args=[limit, window_seconds * 1000]
        )
        return int(count), max(int(ttl_ms), 0) / 1000, bool(allowed)

    async def close(self) -> None:
        await self.client.aclose()


class RateLimiter:
    """Counts requests per Space and endpoint; fails open while its store is unreachable."""

    def __init__(self, counters: Counters, window_seconds: int = 60) -> None:
        self.counters = counters
        self.window_seconds = window_seconds
        self.unavailable_until = 0.0
        self.in_outage = False

    async def hit(self, space_id: int, endpoint: str, limit: int) -> Decision | None:
        """Count a request; None when it could not be counted (the store is down)."""
        if time.monotonic() < self.unavailable_until:
            return None
        try:
            count, reset, allowed = await self.counters.count(
                f"{space_id}:{endpoint}", limit, self.window_seconds
            )
        except (RedisError, OSError) as exc:
            self.unavailable_until = time.monotonic() + REDIS_RETRY_SECONDS
            if not self.in_outage:
                self.in_outage = True
                log.warning("rate-limit store unreachable, serving without limits: %r", exc)
            return None
        if self.in_outage:
            self.in_outage = False
            log.warning("rate-limit store reachable again, limits apply")
        return Decision(endpoint, limit, count, reset, allowed)

    async def close(self) -> None:
        await self.counters.close()


def build_limiter(redis_url: str | None, window_seconds: int = 60) -> RateLimiter:
    counters: Counters = RedisCounters(redis_url) if redis_url else MemoryCounters()
    return RateLimiter(counters, window_seconds)

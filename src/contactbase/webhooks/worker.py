"""The delivery worker every server process runs (SPEC 6.6).

Each round it turns new events into messages and claims what is due (webhooks/queue.py), then
sends each claimed message in a task of its own, so one slow endpoint never holds up another:
at most `webhook_in_flight` attempts run at once in a process, and at most
`webhook_in_flight_per_endpoint` for one endpoint in all processes, so an endpoint that hangs
until its timeout takes a few slots, never all of them.
"""

import asyncio
import contextlib
import logging
import time

from contactbase.db import Database
from contactbase.logs import Failures
from contactbase.metrics import Metrics
from contactbase.settings import Settings
from contactbase.webhooks import queue, signing
from contactbase.webhooks.queue import Claim
from contactbase.webhooks.sending import Sender

log = logging.getLogger("contactbase.webhooks")
# Messages one slot sends to one endpoint in a row before it goes back to the rounds.
LANE = 100


class WebhookWorker:
    def __init__(self, db: Database, settings: Settings, metrics: Metrics | None = None) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.sender = Sender(
            timeout=settings.webhook_timeout_seconds,
            allow_private=settings.webhook_allow_private,
            connections=settings.webhook_in_flight_per_endpoint,
        )
        self.in_flight: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()

    async def run_forever(self) -> None:
        """A round every `webhook_poll_seconds` (sooner when an attempt frees a slot) until
        cancelled; the attempts in flight are then cancelled, and their leases run out."""
        try:
            failures = Failures(log, "webhook worker")
            while True:
                self._freed.clear()  # before the round: a slot freed during it wakes the next
                try:
                    await self.run_once()
                    failures.recovered()
                except Exception as exc:  # the loop must outlive any one failure
                    failures.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), self.settings.webhook_poll_seconds)
        finally:
            await self.close()

    async def run_once(self) -> int:
        """One round: fan out, claim, start the attempts; how many were started."""
        await queue.fan_out(self.db)
        room = self.settings.webhook_in_flight - len(self.in_flight)
        if room <= 0:
            return 0
        claims = await queue.claim(self.db, room, self.settings)
        for claimed in claims:
            task = asyncio.create_task(self._attempt(claimed), name=f"webhook {claimed.id}")
            self.in_flight.add(task)
            task.add_done_callback(self._done)
        return len(claims)

    async def drain(self) -> None:
        """Wait for the attempts in flight (tests)."""
        while self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)

    async def close(self) -> None:
        for task in self.in_flight:
            task.cancel()
        await asyncio.gather(*self.in_flight, return_exceptions=True)
        await self.sender.close()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self._freed.set()

    async def _attempt(self, claimed: Claim) -> None:
        """Send the message, then the endpoint's next due ones, each leased as the one before is
        recorded: the slot stays with a busy endpoint without a round of claims between
        messages, for up to LANE messages, then goes back to the rounds (other endpoints')."""
        following: Claim | None = claimed
        for sent in range(1, LANE + 1):
            if following is None:
                return
            claimed = following
            timestamp = int(time.time())
            headers = signing.headers(claimed.secrets, claimed.message_id, timestamp, claimed.body)
            answer = await self.sender.post(claimed.endpoint_id, claimed.url, claimed.body, headers)
            if self.metrics is not None:
                self.metrics.webhook_attempts.labels("delivered" if answer.ok else "failed").inc()
            try:
                following = await queue.record(
                    self.db, claimed, answer, self.settings, then_next=sent < LANE
                )
            except Exception as exc:
                # Unrecorded, the lease runs out and the message is sent again: at least once.
                log.warning(
                    "webhook %s: the attempt's outcome was not recorded: %r", claimed.id, exc
                )
                return

"""The load: concurrent clients creating contacts in small families whose emails overlap, so
that creates merge into earlier contacts (and merges chain), with reads and updates alongside;
every request and its outcome is kept in a ledger.

Updates replace a custom-field slot only (never a collection), so that every value an
acknowledged create sent stays on its contact for good, which is what the audits check: a read
must show every email of the creates acknowledged with its id before the read was sent."""

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

FAMILY_SIZE = 8  # requests per family: keeps merged contacts small
SEPARATE = 3  # a family's first requests, which send new emails only
OPEN_FAMILIES = 48  # families taking requests at once: some concurrent merges of one family
READ_SHARE = 0.1
UPDATE_SHARE = 0.05
SLOT = "profile_field_1"  # the slot updates set


@dataclass
class Attempt:
    """One request and what became of it."""

    kind: str  # "create", "read" or "update"
    payload: dict[str, Any]
    started: float
    finished: float = 0.0
    status: int | None = None  # None: no answer (connection refused, reset, timed out)
    error: str | None = None
    contact_id: int | None = None

    @property
    def acknowledged(self) -> bool:
        """Answered 2xx: the client was told the write is done."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        """The status (with a 5xx's message), or why there was no answer."""
        if self.status is None:
            return f"no answer ({self.error})"
        return f"{self.status} ({self.error})" if self.error else str(self.status)


@dataclass
class Family:
    """Requests about one person: later ones reuse earlier ones' emails."""

    number: int
    emails: list[str] = field(default_factory=list)
    requests: int = 0


class Payloads:
    """Create bodies about people in families: later requests reuse earlier ones' emails."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.sequence = 0
        self.families: list[Family] = []
        self.opened = 0

    def _family(self) -> Family:
        if len(self.families) < OPEN_FAMILIES:
            self.opened += 1
            self.families.append(Family(self.opened))
        return self.random.choice(self.families)

    def next(self) -> dict[str, list[str]]:
        """The next create body."""
        self.sequence += 1
        n, rnd = self.sequence, self.random
        family = self._family()
        new = [f"f{family.number}.r{n}.{i}@example.com" for i in range(rnd.randint(1, 2))]
        reused: list[str] = []
        # The first requests of a family make separate contacts; later ones merge some of them,
        # and merge the survivors again, so that aliases have to be re-pointed (chains).
        if family.requests >= SEPARATE and rnd.random() < 0.8:
            picked = rnd.sample(family.emails, min(len(family.emails), rnd.randint(1, 3)))
            # Emails compare trimmed and lower-cased: send some of them shouted.
            reused = [email.upper() if rnd.random() < 0.2 else email for email in picked]
        emails = reused + new if rnd.random() < 0.5 else new + reused
        family.emails += new
        family.requests += 1
        if family.requests >= FAMILY_SIZE:
            self.families.remove(family)
        return {
            "emails": emails,
            "phones": [f"+1 555 {n:07d}{i}" for i in range(rnd.randint(0, 2))],
            "names": [f"Person {n}-{i}" for i in range(rnd.randint(0, 2))],
            "locations": [f"Town {n}" for _ in range(rnd.randint(0, 1))],
        }


class Load:
    """`clients` tasks sending requests until stopped, or until `max_requests` were sent."""

    def __init__(self, base_url: str, key: str, clients: int, max_requests: int, seed: int) -> None:
        self.base_url = base_url
        self.key = key
        self.clients = clients
        self.max_requests = max_requests
        self.payloads = Payloads(seed)
        self.random = random.Random(seed + 1)
        self.ledger: list[Attempt] = []
        self.created_ids: list[int] = []
        self.incomplete_answers = 0  # 2xx answers to creates that lack emails the request sent
        self.incomplete_reads = 0  # 200 answers to reads that lack an acknowledged email
        self.wrong_updates = 0  # 200 answers to updates that do not show the slot sent
        # Emails of the creates acknowledged so far, by the id they were answered with.
        self.acknowledged_emails: dict[int, set[str]] = {}
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        """Send requests from every client until stopped."""
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=15, limits=limits
        ) as http:
            await asyncio.gather(*(self._client(http) for _ in range(self.clients)))

    def stop(self) -> None:
        """Let each client finish its request in flight, then stop."""
        self.stopping.set()

    async def _client(self, http: httpx.AsyncClient) -> None:
        while not self.stopping.is_set() and len(self.ledger) < self.max_requests:
            attempt, request = self._next(http)
            self.ledger.append(attempt)
            expected = set(self.acknowledged_emails.get(attempt.contact_id or 0, ()))
            try:
                response = await request
            except httpx.HTTPError as exc:
                attempt.error = type(exc).__name__
            else:
                attempt.status = response.status_code
                if attempt.status >= 500:
                    # Which refusal: the database away, or a merge that kept losing races.
                    attempt.error = message_of(response)
                if attempt.acknowledged:
                    self._check(attempt, response.json(), expected)
            attempt.finished = time.monotonic()
            if not attempt.acknowledged:
                await asyncio.sleep(0.05)  # a client backs off a little before the next try

    def _next(self, http: httpx.AsyncClient) -> tuple[Attempt, Any]:
        """The next request: mostly creates; reads and updates of acknowledged contacts."""
        draw = self.random.random()
        if self.created_ids and draw < READ_SHARE + UPDATE_SHARE:
            contact_id = self.random.choice(self.created_ids)
            path = f"/public-api/v1/contacts/{contact_id}"
            if draw < READ_SHARE:
                attempt = Attempt("read", {}, time.monotonic(), contact_id=contact_id)
                return attempt, http.get(path)
            body = {"custom_fields": {SLOT: f"v{len(self.ledger)}"}}
            attempt = Attempt("update", body, time.monotonic(), contact_id=contact_id)
            return attempt, http.put(path, json=body)
        attempt = Attempt("create", self.payloads.next(), time.monotonic())
        return attempt, http.post("/public-api/v1/contacts", json=attempt.payload)

    def _check(self, attempt: Attempt, answer: dict[str, Any], expected: set[str]) -> None:
        """What a 2xx answer must show: a create, every email it sent; a read, every email
        acknowledged with its id before it was sent; an update, the slot it set."""
        if attempt.kind == "update":
            if answer.get("custom_fields") != attempt.payload["custom_fields"]:
                self.wrong_updates += 1
            return
        held = {email.strip().lower() for email in answer["emails"]}
        if attempt.kind == "read":
            if not expected <= held:
                self.incomplete_reads += 1
            return
        attempt.contact_id = int(answer["id"])
        self.created_ids.append(attempt.contact_id)
        sent = {email.strip().lower() for email in attempt.payload["emails"]}
        if not sent <= held:
            self.incomplete_answers += 1
        self.acknowledged_emails.setdefault(attempt.contact_id, set()).update(sent)

    def first_acknowledged_create(self, since: int) -> float | None:
        """When the first create sent after the ledger's first `since` entries was acknowledged."""
        done = [a.finished for a in self.ledger[since:] if a.kind == "create" and a.acknowledged]
        return min(done) if done else None

    def tally(self, kind: str | None = None) -> Counter[str]:
        """Outcomes by status (or by the error of requests that got no answer)."""
        return Counter(a.outcome for a in self.ledger if kind is None or a.kind == kind)


def message_of(response: httpx.Response) -> str:
    """The start of an error's `message` (or of its text, when the body is not JSON)."""
    try:
        return str(response.json()["message"]).split(";")[0].split(". ")[0][:60]
    except (ValueError, KeyError, TypeError):
        return response.text[:40]


def counts(ledger: list[Attempt]) -> dict[str, Any]:
    """sent, acknowledged (2xx), refused (503) and other failures."""
    finished = [a for a in ledger if a.finished]
    acknowledged = sum(a.acknowledged for a in finished)
    refused = sum(a.status == 503 for a in finished)
    return {
        "sent": len(finished),
        "acknowledged": acknowledged,
        "refused": refused,
        "other": len(finished) - acknowledged - refused,
    }

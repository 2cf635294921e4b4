"""The service's Prometheus metrics, in a registry of each app's own."""

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from contactbase.sqlite import Embedded


class Metrics:
    """The service's Prometheus metrics, in a registry of the app's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "contactbase_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "contactbase_request_seconds",
            "Time to answer a request.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.unlimited = Counter(
            "contactbase_ratelimit_unlimited",
            "Requests served without a rate-limit check: the limit store was unreachable.",
            registry=self.registry,
        )
        self.database_unavailable = Counter(
            "contactbase_database_unavailable",
            "Requests answered 503: database unavailable.",
            registry=self.registry,
        )
        self.webhook_attempts = Counter(
            "contactbase_webhook_attempts",
            "Webhook delivery attempts, by outcome: delivered (a 2xx) or failed (anything else).",
            ["outcome"],
            registry=self.registry,
        )
        # The labelled children of each request's two metrics, by their labels
        # (prometheus_client finds them under a lock, at a cost on every request).
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a request answered, and its time."""
        children = self._children.get((method, route, status))
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch(self, embedded: Embedded) -> None:
        """Show the SQLite writer's commits and the writes they held (group commit)."""
        self.registry.register(_WriterCounts(embedded))


class _WriterCounts(Collector):
    def __init__(self, embedded: Embedded) -> None:
        self.embedded = embedded

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "contactbase_sqlite_commits",
            "Transactions committed by SQLite's writer (each holds the writes queued by then).",
            value=self.embedded.commits,
        )
        yield CounterMetricFamily(
            "contactbase_sqlite_writes",
            "Writes committed by SQLite's writer.",
            value=self.embedded.writes,
        )

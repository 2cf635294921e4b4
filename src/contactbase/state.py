"""The services one app holds (database, limiter, metrics, export and webhook workers, ...),
typed, in one object on the app, read through `state_of`."""

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request

from contactbase.contacts.export_worker import ExportWorker
from contactbase.db import Database
from contactbase.metrics import Metrics
from contactbase.ratelimit import RateLimiter
from contactbase.settings import Settings
from contactbase.spaces.keycache import KeyCache
from contactbase.webhooks.worker import WebhookWorker


@dataclass
class AppState:
    settings: Settings
    db: Database
    metrics: Metrics
    limiter: RateLimiter
    exports: ExportWorker
    webhooks: WebhookWorker
    schema_head: str | None
    keys: KeyCache
    # The signing secret: from the settings, else read from the database at first use.
    signing_key: bytes | None = None


def state_of(holder: Starlette | Request) -> AppState:
    """The app's services, from the app or from one of its requests."""
    app = holder.app if isinstance(holder, Request) else holder
    state: AppState = app.state.contactbase
    return state

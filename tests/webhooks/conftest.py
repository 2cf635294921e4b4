"""Webhook tests: a worker of their own beside the app, a real receiver, private addresses
allowed (the receiver is on 127.0.0.1) and a retry schedule of fractions of a second."""

from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI

from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.state import state_of
from contactbase.webhooks.worker import WebhookWorker
from tests.webhooks.receivers import Receiver, running_receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, with the receivers' private addresses allowed and a quick retry
    schedule."""
    changes = {"webhook_allow_private": True, "webhook_poll_seconds": 0.1}
    return Settings(**{**settings.model_dump(), **changes, "webhook_retry_schedule": "0.2,0.2"})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
async def worker(app: FastAPI, db: Database, settings: Settings) -> AsyncIterator[WebhookWorker]:
    """A worker beside the app (the app's own runs only in its lifespan), counting in its
    metrics."""
    webhooks = WebhookWorker(db, settings, state_of(app).metrics)
    yield webhooks
    await webhooks.close()

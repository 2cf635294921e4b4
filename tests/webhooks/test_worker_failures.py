"""The worker outlives failures and says each once, not every round."""

import asyncio
import logging
from pathlib import Path

import pytest

from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.webhooks.worker import WebhookWorker


async def test_a_missing_schema_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    db = Database(url, pool_size=1)
    worker = WebhookWorker(db, Settings(database_url=url, webhook_poll_seconds=0.05))
    with caplog.at_level(logging.WARNING, logger="contactbase.webhooks"):
        task = asyncio.create_task(worker.run_forever())
        await asyncio.sleep(1.0)  # about 20 rounds
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await db.dispose()
    failures = [record for record in caplog.records if record.name == "contactbase.webhooks"]
    assert len(failures) == 1
    assert "no such table" in failures[0].getMessage() + str(failures[0].exc_info)

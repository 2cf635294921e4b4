"""Signatures as Standard Webhooks writes them, checked against the `standardwebhooks`
package; and the retry schedule's setting."""

import time
from datetime import datetime

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook

from contactbase.settings import Settings
from contactbase.webhooks import signing

EVENT = signing.Event(7, 3, "contact.created", 12, None, datetime(2026, 11, 30, 10, 0, 0))


def test_the_package_verifies_each_secret_of_a_rotation() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    body = signing.message_body(EVENT)
    headers = signing.headers((new, old), "msg_1", int(time.time()), body.encode())
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {
            "type": "contact.created",
            "timestamp": "2026-11-30T10:00:00Z",
            "data": {
                "seq": 3,
                "type": "contact.created",
                "contact_id": 12,
                "merged_into": None,
                "occurred_at": "2026-11-30T10:00:00Z",
            },
        }


def test_secrets_and_message_ids_are_new_each_time() -> None:
    assert len({signing.new_secret() for _ in range(100)}) == 100
    assert len({signing.new_message_id() for _ in range(100)}) == 100
    assert signing.new_secret().startswith("whsec_")


@pytest.mark.parametrize("schedule", ["", "1,,2", "0", "-1", "a,b", "nan", "inf", "1;2"])
def test_a_bad_retry_schedule_is_refused_naming_the_setting(
    schedule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTACTBASE_WEBHOOK_RETRY_SCHEDULE", schedule)
    with pytest.raises(ValidationError, match="webhook_retry_schedule"):
        Settings()


def test_the_default_schedule_spends_about_a_day() -> None:
    delays = Settings().webhook_retry_delays
    assert len(delays) + 1 == 10
    assert 23 * 3600 < sum(delays) < 24 * 3600
    monkeypatched = Settings(webhook_retry_schedule="1,1,2")
    assert monkeypatched.webhook_retry_delays == (1.0, 1.0, 2.0)

"""Webhook delivery end to end: changes made through the API reach a real receiver, signed as
Standard Webhooks says (checked with the `standardwebhooks` package, not our own code), at least
once, with retries, and never held up by another endpoint."""

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook, WebhookVerificationError

from contactbase.db import Database
from contactbase.settings import Settings
from contactbase.webhooks import service
from contactbase.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from contactbase.webhooks.worker import WebhookWorker
from tests.factories import CONTACTS, add_contact, bearer, make_endpoint, make_key, make_space
from tests.webhooks.receivers import Receiver, Reply, settle


def verified(secret: str, received: Any) -> dict[str, Any]:
    """The payload, once the package's own verification has passed."""
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


async def tenant(db: Database) -> tuple[int, dict[str, str]]:
    space_id = await make_space(db)
    return space_id, bearer(await make_key(db, space_id))


async def endpoint_row(db: Database, endpoint_id: int) -> WebhookEndpoint:
    async with db.reader() as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        assert endpoint is not None
        return endpoint


async def attempts_of(db: Database, endpoint_id: int) -> list[WebhookAttempt]:
    async with db.reader() as session:
        query = select(WebhookAttempt).where(WebhookAttempt.endpoint_id == endpoint_id)
        return list((await session.scalars(query.order_by(WebhookAttempt.id))).all())


async def test_every_change_reaches_the_receiver_signed(
    client: httpx.AsyncClient, db: Database, worker: WebhookWorker, receiver: Receiver
) -> None:
    space_id, auth = await tenant(db)
    endpoint_id, secret = await make_endpoint(db, space_id, receiver.url())
    first = await add_contact(client, auth, {"emails": ["ada@example.com"]})
    second = await add_contact(client, auth, {"emails": ["bob@example.com"]})
    await add_contact(client, auth, {"emails": ["ada@example.com", "bob@example.com"]})
    erased = await client.delete(f"{CONTACTS}/{first['id']}", headers=auth)
    assert erased.status_code == 204

    await settle(worker)

    payloads = [verified(secret, one) for one in receiver.at("/hook")]
    seen = [(p["data"]["seq"], p["type"], p["data"]["contact_id"]) for p in payloads]
    assert sorted(seen) == [
        (1, "contact.created", first["id"]),
        (2, "contact.created", second["id"]),
        (3, "contact.merged", second["id"]),
        (4, "contact.updated", first["id"]),
        (5, "contact.erased", first["id"]),
    ]
    merged = next(p for p in payloads if p["type"] == "contact.merged")
    assert merged["data"]["merged_into"] == first["id"]
    assert merged["timestamp"] == merged["data"]["occurred_at"]
    assert set(merged) == {"type", "timestamp", "data"}
    ids = {one.headers["webhook-id"] for one in receiver.at("/hook")}
    assert len(ids) == 5
    assert all(one.headers["content-type"] == "application/json" for one in receiver.at("/hook"))
    with pytest.raises(WebhookVerificationError):
        verified("whsec_" + "QUFB" * 8, receiver.at("/hook")[0])  # another secret fails
    assert [a.status for a in await attempts_of(db, endpoint_id)] == [200] * 5
    metrics = (await client.get("/metrics")).text
    assert 'contactbase_webhook_attempts_total{outcome="delivered"} 5.0' in metrics


async def test_an_endpoint_gets_only_the_types_it_asked_for(
    client: httpx.AsyncClient, db: Database, worker: WebhookWorker, receiver: Receiver
) -> None:
    space_id, auth = await tenant(db)
    _id, secret = await make_endpoint(db, space_id, receiver.url("/merges"), ["contact.merged"])
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    await add_contact(client, auth, {"emails": ["bob@example.com"]})
    await add_contact(client, auth, {"emails": ["ada@example.com", "bob@example.com"]})
    await settle(worker)
    assert [verified(secret, one)["type"] for one in receiver.at("/merges")] == ["contact.merged"]


async def test_a_space_never_hears_of_another(
    client: httpx.AsyncClient, db: Database, worker: WebhookWorker, receiver: Receiver
) -> None:
    space_a, _auth_a = await tenant(db)
    _space_b, auth_b = await tenant(db)
    await make_endpoint(db, space_a, receiver.url("/a"))
    await add_contact(client, auth_b, {"emails": ["bob@example.com"]})
    await settle(worker)
    assert receiver.received == []


async def test_failures_are_retried_with_the_same_message_id(
    client: httpx.AsyncClient, db: Database, worker: WebhookWorker, receiver: Receiver
) -> None:
    space_id, auth = await tenant(db)
    endpoint_id, _secret = await make_endpoint(db, space_id, receiver.url())
    receiver.answer("/hook", Reply(500, b"try later"), Reply(503), Reply(204))
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    for _round in range(40):
        await settle(worker)
        if len(receiver.at("/hook")) == 3:
            break
        await asyncio.sleep(0.1)
    arrived = receiver.at("/hook")
    assert len(arrived) == 3
    assert len({one.headers["webhook-id"] for one in arrived}) == 1
    attempts = await attempts_of(db, endpoint_id)
    assert [(a.attempt, a.status) for a in attempts] == [(1, 500), (2, 503), (3, 204)]
    assert attempts[0].response == "try later"
    async with db.reader() as session:
        states = (await session.scalars(select(WebhookDelivery.state))).all()
    assert states == ["delivered"]
    assert (await endpoint_row(db, endpoint_id)).failing_since is None


async def test_a_message_fails_once_the_schedule_is_spent(
    client: httpx.AsyncClient,
    db: Database,
    worker: WebhookWorker,
    receiver: Receiver,
) -> None:
    space_id, auth = await tenant(db)
    endpoint_id, _secret = await make_endpoint(db, space_id, receiver.url())
    receiver.answer("/hook", Reply(500))
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    for _round in range(40):
        await settle(worker)
        async with db.reader() as session:
            state = await session.scalar(select(WebhookDelivery.state))
        if state == "failed":
            break
        await asyncio.sleep(0.1)
    # The schedule "0.2,0.2": a first attempt and two retries.
    assert state == "failed"
    assert [a.attempt for a in await attempts_of(db, endpoint_id)] == [1, 2, 3]
    endpoint = await endpoint_row(db, endpoint_id)
    assert endpoint.enabled
    assert endpoint.failing_since is not None


async def test_410_disables_the_endpoint(
    client: httpx.AsyncClient, db: Database, worker: WebhookWorker, receiver: Receiver
) -> None:
    space_id, auth = await tenant(db)
    endpoint_id, _secret = await make_endpoint(db, space_id, receiver.url())
    receiver.answer("/hook", Reply(410))
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    await settle(worker)
    endpoint = await endpoint_row(db, endpoint_id)
    assert not endpoint.enabled
    assert endpoint.disabled_reason is not None
    assert "410" in endpoint.disabled_reason
    await add_contact(client, auth, {"emails": ["bob@example.com"]})
    await asyncio.sleep(0.5)
    await settle(worker)
    assert len(receiver.at("/hook")) == 1


async def test_failing_for_long_disables_the_endpoint(
    client: httpx.AsyncClient, db: Database, settings: Settings, receiver: Receiver
) -> None:
    failing = settings.model_copy(
        update={"webhook_disable_after_seconds": 1, "webhook_retry_schedule": "0.6,0.6,0.6"}
    )
    worker = WebhookWorker(db, failing)
    space_id, auth = await tenant(db)
    endpoint_id, _secret = await make_endpoint(db, space_id, receiver.url())
    receiver.answer("/hook", Reply(500))
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    try:
        for _round in range(60):
            await settle(worker)
            if not (await endpoint_row(db, endpoint_id)).enabled:
                break
            await asyncio.sleep(0.1)
    finally:
        await worker.close()
    endpoint = await endpoint_row(db, endpoint_id)
    assert not endpoint.enabled
    assert endpoint.disabled_reason is not None
    assert endpoint.disabled_reason.startswith("every attempt failed from ")
    assert len(receiver.at("/hook")) == 3  # the first attempt, and two retries 0.6 s apart


async def test_a_rotated_secret_signs_beside_the_new_one_for_the_overlap(
    client: httpx.AsyncClient, db: Database, worker: WebhookWorker, receiver: Receiver
) -> None:
    space_id, auth = await tenant(db)
    endpoint_id, old = await make_endpoint(db, space_id, receiver.url())
    async with db.writer() as session, session.begin():
        _endpoint, new = await service.rotate_secret(session, endpoint_id, 3600)
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    await settle(worker)
    (during,) = receiver.at("/hook")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert verified(old, during) == verified(new, during)

    async with db.writer() as session, session.begin():
        _endpoint, newest = await service.rotate_secret(session, endpoint_id, 0)
    await add_contact(client, auth, {"emails": ["bob@example.com"]})
    await settle(worker)
    after = receiver.at("/hook")[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert verified(newest, after)["type"] == "contact.created"
    with pytest.raises(WebhookVerificationError):
        verified(new, after)


async def test_events_of_a_pause_are_not_queued_and_replay_resends_them(
    client: httpx.AsyncClient, db: Database, worker: WebhookWorker, receiver: Receiver
) -> None:
    space_id, auth = await tenant(db)
    endpoint_id, secret = await make_endpoint(db, space_id, receiver.url())
    await add_contact(client, auth, {"emails": ["one@example.com"]})
    await settle(worker)
    async with db.writer() as session, session.begin():
        await service.disable(session, endpoint_id)
    await add_contact(client, auth, {"emails": ["two@example.com"]})
    await settle(worker)
    async with db.writer() as session, session.begin():
        await service.enable(session, endpoint_id)
    await add_contact(client, auth, {"emails": ["three@example.com"]})
    await settle(worker)
    assert [verified(secret, one)["data"]["seq"] for one in receiver.at("/hook")] == [1, 3]

    async with db.writer() as session, session.begin():
        assert await service.replay(session, endpoint_id, after=0, until=2) == 2
    await settle(worker)
    arrived = receiver.at("/hook")
    seqs = [verified(secret, one)["data"]["seq"] for one in arrived]
    assert (seqs[:2], sorted(seqs[2:])) == ([1, 3], [1, 2])  # replays in any order
    assert len({one.headers["webhook-id"] for one in arrived}) == 4  # each a new message


async def test_the_answer_kept_is_at_most_4_kib(
    client: httpx.AsyncClient, db: Database, worker: WebhookWorker, receiver: Receiver
) -> None:
    space_id, auth = await tenant(db)
    endpoint_id, _secret = await make_endpoint(db, space_id, receiver.url())
    receiver.answer("/hook", Reply(200, b"x" * 10_000))
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    await settle(worker)
    (attempt,) = await attempts_of(db, endpoint_id)
    assert attempt.response == "x" * 4096


async def test_a_redirect_is_a_failure_and_is_not_followed(
    client: httpx.AsyncClient, db: Database, worker: WebhookWorker, receiver: Receiver
) -> None:
    space_id, auth = await tenant(db)
    endpoint_id, _secret = await make_endpoint(db, space_id, receiver.url())
    receiver.answer("/hook", Reply(307, headers={"location": receiver.url("/elsewhere")}))
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    await settle(worker)
    assert [a.status for a in await attempts_of(db, endpoint_id)] == [307]
    assert receiver.at("/elsewhere") == []


async def test_private_addresses_are_refused_at_delivery(
    client: httpx.AsyncClient, db: Database, settings: Settings, receiver: Receiver
) -> None:
    """Allowed when the endpoint was made, refused when the message goes: checked each time."""
    strict = WebhookWorker(db, settings.model_copy(update={"webhook_allow_private": False}))
    space_id, auth = await tenant(db)
    endpoint_id, _secret = await make_endpoint(db, space_id, receiver.url())
    await add_contact(client, auth, {"emails": ["ada@example.com"]})
    try:
        await settle(strict)
    finally:
        await strict.close()
    (attempt,) = await attempts_of(db, endpoint_id)
    assert attempt.status is None
    assert attempt.error is not None
    assert "loopback" in attempt.error
    assert receiver.received == []


async def test_a_hanging_endpoint_never_delays_another(
    client: httpx.AsyncClient, db: Database, settings: Settings, receiver: Receiver
) -> None:
    """SPEC 6.6: while one endpoint hangs until its timeout (10 s), another's events arrive
    within 5 s of their commit; the hanging one holds at most its share of the slots."""
    worker = WebhookWorker(db, settings.model_copy(update={"webhook_in_flight_per_endpoint": 2}))
    space_id, auth = await tenant(db)
    await make_endpoint(db, space_id, receiver.url("/hangs"))
    await make_endpoint(db, space_id, receiver.url("/answers"))
    receiver.answer("/hangs", Reply(hang=True))
    task = asyncio.create_task(worker.run_forever())
    try:
        await add_contact(client, auth, {"emails": ["first@example.com"]})
        await receiver.wait_for("/hangs", 1)
        committed = {}
        for n in range(5):
            created = await add_contact(client, auth, {"emails": [f"later{n}@example.com"]})
            committed[created["id"]] = time.time()
            await asyncio.sleep(0.2)
        arrived = await receiver.wait_for("/answers", 6, within=15)
        held = receiver.holding["/hangs"]
    finally:
        receiver.release()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert held == receiver.most_held["/hangs"] == 2
    delays = {}
    for one in arrived:
        contact_id = json.loads(one.body)["data"]["contact_id"]
        if contact_id in committed:
            delays[contact_id] = one.at - committed[contact_id]
    assert len(delays) == 5
    assert max(delays.values()) < 5, delays


async def test_two_workers_deliver_each_message_once_and_share_the_endpoint_limit(
    client: httpx.AsyncClient, db: Database, settings: Settings, receiver: Receiver
) -> None:
    """Two workers (as two server processes) claim from one queue: each message goes once,
    and together they keep to the endpoint's limit of messages in flight."""
    limited = settings.model_copy(update={"webhook_in_flight_per_endpoint": 3})
    workers = [WebhookWorker(db, limited), WebhookWorker(db, limited)]
    space_id, auth = await tenant(db)
    await make_endpoint(db, space_id, receiver.url("/slow"))
    receiver.answer("/slow", Reply(hang=True))
    for n in range(12):
        await add_contact(client, auth, {"emails": [f"p{n}@example.com"]})
    tasks = [asyncio.create_task(one.run_forever()) for one in workers]
    try:
        await receiver.wait_for("/slow", 3)
        await asyncio.sleep(1.0)  # rounds of both workers, while three hang
        assert receiver.holding["/slow"] == 3
        receiver.release()
        await receiver.wait_for("/slow", 12)
        await asyncio.sleep(0.5)
    finally:
        receiver.release()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert receiver.most_held["/slow"] == 3
    ids = [one.headers["webhook-id"] for one in receiver.at("/slow")]
    assert len(ids) == len(set(ids)) == 12
    async with db.reader() as session:
        delivered = await session.scalar(
            select(func.count()).where(WebhookDelivery.state == "delivered")
        )
    assert delivered == 12

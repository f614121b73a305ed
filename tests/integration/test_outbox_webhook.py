"""The outbox and the signed webhook, against a real receiver on loopback.

Outbox rows commit with the change that causes them; the worker delivers them with
retries (backoff, ``Retry-After``), gives up after the maximum attempts (``dead``, kept),
and a receiver can verify each body and tell a replayed or altered one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from signoff import store
from signoff.db import Database
from signoff.metrics import Metrics
from signoff.notify import outbox
from signoff.notify.channels import build_senders
from signoff.notify.delivery import retry_delay
from signoff.notify.webhook import SIGNATURE_HEADER, sign, verify
from signoff.notify.worker import Notifier
from signoff.settings import Settings
from tests.conftest import FakeClock
from tests.integration.notify_support import Answer, Recorder, serving
from tests.integration.store_support import new_incident, new_request

SECRET = "webhook-secret"


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with serving(Recorder()) as rec:
        yield rec


def _settings(db_url: str, receiver: Recorder, **extra: Any) -> Settings:
    return Settings(database_url=db_url, webhook_url=receiver.url + "/hook",
                    webhook_secret=SECRET, callback_allow=["http://127.0.0.1"], **extra)


@pytest.fixture
async def notified(
    db_url: str, receiver: Recorder, clock: FakeClock
) -> AsyncIterator[tuple[Database, Notifier]]:
    settings = _settings(db_url, receiver, notify_max_attempts=5)
    db = Database.from_settings(settings, clock=clock)
    async with httpx.AsyncClient(timeout=2) as client:
        yield db, Notifier(db, settings, Metrics(), build_senders(db, settings, client),
                           rng=lambda: 0.5)
    await db.dispose()


async def items(db: Database, **filters: Any) -> list[Any]:
    return await db.run(lambda c, n: outbox.list_items(c, **filters), readonly=True)


async def test_every_transition_is_delivered_signed(
    notified: tuple[Database, Notifier], receiver: Recorder
) -> None:
    db, notifier = notified
    incident = await new_incident(db, fingerprint="fp-1", service="web")
    request = await new_request(db, incident_id=incident["id"],
                                callback_url=receiver.url + "/callback")
    await db.run(lambda c, n: store.approve_request(c, n, request["id"], actor="alice"))
    await db.run(lambda c, n: store.report_outcome(c, n, request["id"], actor="bot",
                                                    succeeded=True))
    assert await notifier.run_once() == 6
    by_path: dict[str, list[Any]] = {}
    for call in receiver.calls:
        assert verify(SECRET, call.body, call.headers[SIGNATURE_HEADER.lower()])
        by_path.setdefault(call.path, []).append(call.json)
    events = [body["event"] for body in by_path["/hook"]]
    assert events == ["incident.opened", "request.created", "request.approved",
                      "request.outcome", "incident.resolved"]
    created = by_path["/hook"][1]
    assert set(created) == {"event", "at", "request", "incident"}
    assert created["request"]["status"] == "pending"
    assert created["incident"]["id"] == str(incident["id"])
    assert by_path["/hook"][0]["request"] is None
    # The requester's own callback gets the final state, once.
    [final] = by_path["/callback"]
    assert final["event"] == "request.approved" and final["request"]["status"] == "approved"
    assert "url" not in final
    assert {i["status"] for i in await items(db)} == {"delivered"}
    assert await notifier.run_once() == 0  # nothing twice


def test_a_receiver_detects_replayed_and_altered_bodies() -> None:
    body = json.dumps({"event": "request.expired"}).encode()
    now = int(time.time())
    header = sign(SECRET, body, now)
    assert verify(SECRET, body, header, now=now + 10)
    assert not verify(SECRET, body.replace(b"expired", b"approved"), header, now=now)
    assert not verify("another secret", body, header, now=now)
    assert not verify(SECRET, body, header, now=now + 3600)  # replayed an hour later
    forged = header.replace(f"t={now}", f"t={now + 3600}")  # a fresh t, the old MAC
    assert not verify(SECRET, body, forged, now=now + 3600)
    assert not verify(SECRET, body, "v1=deadbeef", now=now)


async def test_rows_commit_with_their_change_or_not_at_all(
    notified: tuple[Database, Notifier],
) -> None:
    db, _ = notified

    async def doomed(conn: Any, now: Any) -> None:
        await store.create_incident(conn, now, actor="bot", data={"title": "t",
                                                                   "severity": "low"})
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await db.run(doomed)
    assert await items(db) == []


async def test_expiry_writes_its_notifications_in_the_resolver_batch(
    notified: tuple[Database, Notifier], clock: FakeClock, receiver: Recorder
) -> None:
    db, notifier = notified
    incident = await new_incident(db)
    await new_request(db, incident_id=incident["id"], ttl=5)
    await notifier.run_once()
    clock.advance(5)
    batch = await db.run(lambda c, n: store.expire_due_requests(c, n, limit=100))
    assert batch.count == 1
    assert [i["event"] for i in await items(db, status="pending")] == [
        "request.expired", "incident.resolved"]
    await notifier.run_once()
    expired = receiver.calls[-2].json
    assert expired["event"] == "request.expired"
    assert expired["request"]["status"] == "expired"
    assert receiver.calls[-1].json["incident"]["resolution_type"] == "timeout"


async def test_failures_are_retried_with_backoff_then_dead_and_kept(
    notified: tuple[Database, Notifier], clock: FakeClock, receiver: Recorder
) -> None:
    db, notifier = notified
    receiver.default = Answer(503)
    await new_incident(db)
    start = clock.now
    for attempt in range(1, 6):
        assert await notifier.run_once() == 1
        [item] = await items(db)
        assert item["attempts"] == attempt
        if attempt < 5:
            assert item["status"] == "pending"
            wait = (item["next_attempt_at"] - clock.now).total_seconds()
            assert wait == pytest.approx(retry_delay(attempt, rng=lambda: 0.5))
            assert 0 < wait <= 60
            assert await notifier.run_once() == 0  # not before its time
            clock.now = item["next_attempt_at"]
    assert item["status"] == "dead" and "HTTP 503" in item["last_error"]
    assert (clock.now - start).total_seconds() < 60  # retries start within seconds
    assert len(receiver.calls) == 5
    clock.advance(3600)
    assert await notifier.run_once() == 0  # dead is final, and stays visible
    assert [i["status"] for i in await items(db)] == ["dead"]


async def test_retry_after_is_honoured_and_a_recovery_delivers(
    notified: tuple[Database, Notifier], clock: FakeClock, receiver: Recorder
) -> None:
    db, notifier = notified
    receiver.script = [Answer(429, headers={"Retry-After": "30"}), Answer(500)]
    await new_incident(db)
    await notifier.run_once()
    [item] = await items(db)
    assert (item["next_attempt_at"] - clock.now).total_seconds() == pytest.approx(30)
    clock.now = item["next_attempt_at"]
    await notifier.run_once()
    [item] = await items(db)
    clock.now = item["next_attempt_at"]
    await notifier.run_once()
    [item] = await items(db)
    assert item["status"] == "delivered" and item["attempts"] == 3
    # The same delivery id on every attempt: the receiver can drop duplicates.
    assert len({c.headers["x-signoff-delivery"] for c in receiver.calls}) == 1


async def test_a_permanent_refusal_is_dead_at_once(
    notified: tuple[Database, Notifier], receiver: Recorder
) -> None:
    db, notifier = notified
    receiver.default = Answer(404)
    await new_incident(db)
    await notifier.run_once()
    [item] = await items(db)
    assert item["status"] == "dead" and item["attempts"] == 1


def test_backoff_grows_with_jitter_and_stays_within_a_minute() -> None:
    assert retry_delay(1, rng=lambda: 0.0) == 0.5
    assert retry_delay(1, rng=lambda: 1.0) == 1.0
    assert retry_delay(4, rng=lambda: 0.0) == 4.0
    assert all(retry_delay(n, rng=lambda: 1.0) <= 60 for n in range(1, 40))
    assert retry_delay(2, retry_after=7) == 7
    assert retry_delay(2, retry_after=600) == 60


async def test_the_running_worker_picks_a_new_item_up_within_a_second(
    db_url: str, receiver: Recorder
) -> None:
    settings = _settings(db_url, receiver)
    db = Database.from_settings(settings)
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=2) as client:
        notifier = Notifier(db, settings, Metrics(), build_senders(db, settings, client))
        task = asyncio.create_task(notifier.run(stop))
        try:
            await asyncio.sleep(0.3)
            for _ in range(3):
                started = time.monotonic()
                await new_incident(db)  # no wake: found by the poll, as from another replica
                await asyncio.to_thread(receiver.wait_for, 1, 5.0)
                assert time.monotonic() - started < 1.0
                receiver.calls.clear()
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            await db.dispose()


async def test_no_channel_configured_writes_no_rows(db: Database) -> None:
    await new_incident(db)
    request = await new_request(db, ttl=timedelta(minutes=1).total_seconds())
    await db.run(lambda c, n: store.reject_request(c, n, request["id"], actor="alice"))
    assert await items(db) == []


async def test_two_workers_share_the_outbox_and_deliver_each_item_once(
    db_url: str, receiver: Recorder
) -> None:
    settings = _settings(db_url, receiver)
    db = Database.from_settings(settings)
    try:
        for n in range(120):
            await new_incident(db, title=f"incident {n}")
        async with httpx.AsyncClient(timeout=2) as client:
            workers = [Notifier(db, settings, Metrics(), build_senders(db, settings, client))
                       for _ in range(2)]
            done = await asyncio.gather(*(w.run_once() for w in workers))
        assert sum(done) == 120
        deliveries = [c.headers["x-signoff-delivery"] for c in receiver.calls]
        assert len(deliveries) == len(set(deliveries)) == 120
        assert {i["status"] for i in await items(db)} == {"delivered"}
    finally:
        await db.dispose()

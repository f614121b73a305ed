"""Memory under steady use: once warm, a request's life leaves nothing behind in the process,
and neither does a crowd of long-poll waiters.

The soak benchmark (bench/soak.py) watches a server's RSS for an hour, and the waiters
benchmark (bench/waiters.py) a server's RSS over two crowds of 10,000 waiters; these are
their quick, in-process counterparts. Requests are created, read, approved, rejected,
cancelled and expired through the app and the resolver, or waited for by hundreds of
waiters at once; after a warm-up, more of them must not add Python objects or allocator
blocks in proportion to their number: a cache without a bound, a label set that grows, a
list of per-request objects, a waiter not removed would all show here.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

from signoff.db import Database
from signoff.lifecycle import Principal, Role
from signoff.metrics import Metrics
from signoff.resolver import Resolver
from signoff.schemas import DecisionIn, RequestIn
from signoff.service import Service
from signoff.settings import Settings
from tests.conftest import FakeClock
from tests.integration.api_support import Api, api_for
from tests.integration.test_waiters import settled

ROUND = 100
# Per life measured. Anything kept per request (a row, a dict, a log event) is several
# objects and dozens of blocks; what a bounded cache or a free list adds is not per life.
OBJECTS_PER_LIFE = 0.5
BLOCKS_PER_LIFE = 2.0


async def live(api: Api, resolver: Resolver, clock: FakeClock, first: int) -> None:
    """One round: a hundred request lives, each of them ended one way or another."""
    for i in range(first, first + ROUND):
        body: dict[str, Any] = {
            "action": "restart service",
            "risk": "low",
            "rationale": "memory",
            "params": {"life": i},
            "ttl_seconds": 5,
        }
        if i % 8 == 3:
            incident = await api.as_("bot").post(
                "/incidents",
                json={"title": f"memory {i}", "severity": "low", "service": f"svc-{i % 7}"},
            )
            assert incident.status_code == 201, incident.text
            body["incident_id"] = incident.json()["id"]
        created = await api.as_("bot").post("/approvals", json=body)
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        fate = i % 4
        if fate == 0:
            assert (await api.as_("alice").get(f"/approvals/{rid}")).status_code == 200
            decided = await api.as_("alice").post(
                f"/approvals/{rid}/approve", json={"comment": "ok"}
            )
        elif fate == 1:
            decided = await api.as_("bob").post(f"/approvals/{rid}/reject", json={"comment": "no"})
        elif fate == 2:
            decided = await api.as_("bot").post(f"/approvals/{rid}/cancel")
        else:
            continue  # left to expire
        assert decided.status_code == 200, decided.text
    clock.advance(10)
    result = await resolver.run_pass()
    assert result.expired == ROUND // 4 and result.errors == 0


def heap() -> tuple[int, int]:
    gc.collect()
    return len(gc.get_objects()), sys.getallocatedblocks()


async def test_request_lives_leave_nothing_behind(
    db_url: str, clocked_db: Database, clock: FakeClock
) -> None:
    settings = Settings(database_url=db_url)
    resolver = Resolver(clocked_db, settings, Metrics(), listen=False, concurrency=1)
    async with api_for(clocked_db, settings) as api:
        for n in range(2):  # warm: pools, compiled statements, first-use imports
            await live(api, resolver, clock, n * ROUND)
        objects, blocks = heap()
        rounds = 4
        for n in range(2, 2 + rounds):
            await live(api, resolver, clock, n * ROUND)
        objects_after, blocks_after = heap()
    lives = rounds * ROUND
    grown = ((objects_after - objects) / lives, (blocks_after - blocks) / lives)
    assert grown[0] < OBJECTS_PER_LIFE and grown[1] < BLOCKS_PER_LIFE, (
        f"per life: {grown[0]:.2f} objects, {grown[1]:.2f} blocks "
        f"({objects} -> {objects_after} objects, {blocks} -> {blocks_after} blocks)"
    )


CROWD = 200


async def crowd(service: Service) -> None:
    """``CROWD`` requests, a long-poll waiter on each, all waiting at once; then each
    approved or rejected, and every waiter answered."""
    bot, alice = Principal("bot", Role.REQUESTER), Principal("alice", Role.APPROVER)
    viewer = Principal("viewer", Role.VIEWER)
    ids = [(await service.create_request(bot, RequestIn(action="restart service")))[0]["id"]
           for _ in range(CROWD)]
    waiting = [asyncio.create_task(service.get_request(viewer, rid, wait=30)) for rid in ids]
    await settled(lambda: len(service.waiters) == CROWD)
    async with asyncio.timeout(30):
        for n, rid in enumerate(ids):
            decide = service.approve if n % 2 == 0 else service.reject
            await decide(alice, rid, DecisionIn(comment="crowd"))
        answers = await asyncio.gather(*waiting)
    assert [a["status"] for a in answers] == ["approved", "rejected"] * (CROWD // 2)
    assert len(service.waiters) == 0


async def test_crowds_of_waiters_leave_nothing_behind(db_url: str) -> None:
    settings = Settings(database_url=db_url)
    db = Database.from_settings(settings)
    service = Service(db, settings, Metrics())
    try:
        await crowd(service)  # warm: the waiters' tables grown, statements prepared
        objects, blocks = heap()
        crowds = 3
        for _ in range(crowds):
            await crowd(service)
        objects_after, blocks_after = heap()
    finally:
        await db.dispose()
    waiters = crowds * CROWD
    grown = ((objects_after - objects) / waiters, (blocks_after - blocks) / waiters)
    assert grown[0] < OBJECTS_PER_LIFE and grown[1] < BLOCKS_PER_LIFE, (
        f"per waiter: {grown[0]:.2f} objects, {grown[1]:.2f} blocks "
        f"({objects} -> {objects_after} objects, {blocks} -> {blocks_after} blocks)"
    )

"""Memory under steady use: once warm, a request's life leaves nothing behind in the process.

The soak benchmark (bench/soak.py) watches a server's RSS for an hour; this is its quick,
in-process counterpart. Requests are created, read, approved, rejected, cancelled and
expired through the app and the resolver; after a warm-up, hundreds more lives must not
add Python objects or allocator blocks in proportion to their number: a cache without a
bound, a label set that grows, a list of per-request objects would all show here.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

from signoff.db import Database
from signoff.metrics import Metrics
from signoff.resolver import Resolver
from signoff.settings import Settings
from tests.conftest import FakeClock
from tests.integration.api_support import Api, api_for

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

"""Many clients deciding the same requests around their deadlines, over real HTTP.

Every 200 must stay true (the final state is what it said), every loser gets a 409 that
names the winning status, and nothing answers 5xx.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import httpx

from tests.acceptance.conftest import Server

REQUESTS = 30
ROUNDS = 6


async def _hammer(server: Server, ids: list[str]) -> list[tuple[str, str, int, dict[str, Any]]]:
    deciders = [
        ("alice", "approve"),
        ("bob", "approve"),
        ("carol", "reject"),
        ("alice", "reject"),
        ("bob", "reject"),
        ("carol", "approve"),
    ]
    results: list[tuple[str, str, int, dict[str, Any]]] = []
    # Idle connections go before the server's keep-alive timeout (5 s) can close one under
    # a call just sent on it: a ReadError on a loaded machine that says nothing of signoff.
    limits = httpx.Limits(max_connections=60, keepalive_expiry=2.0)
    async with httpx.AsyncClient(
        base_url=server.url + "/api/v1", timeout=30, limits=limits
    ) as client:

        async def decide(rid: str, who: str, verb: str, delay: float) -> None:
            await asyncio.sleep(delay)
            r = await client.post(
                f"/approvals/{rid}/{verb}",
                headers={"Authorization": f"Bearer {server.tokens[who]}"},
            )
            results.append((rid, verb, r.status_code, r.json()))

        tasks = [
            decide(rid, who, verb, random.uniform(0.5, 1.6))
            for rid in ids
            for _ in range(ROUNDS // len(deciders) + 1)
            for who, verb in deciders
        ]
        await asyncio.gather(*tasks)
    return results


def test_concurrent_decisions_around_the_deadline(server: Server) -> None:
    bot = server.client("bot")
    ids = [
        bot.post("/approvals", json={"action": f"act-{i}", "ttl_seconds": 1}).json()["id"]
        for i in range(REQUESTS)
    ]
    results = asyncio.run(_hammer(server, ids))
    time.sleep(1.5)  # let the resolver record the expiries
    viewer = server.client("viewer")
    final = {rid: viewer.get(f"/approvals/{rid}").json() for rid in ids}

    assert not [r for r in results if r[2] >= 500], "a 5xx answered a decision"
    winners: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for rid, verb, status, body in results:
        end = final[rid]
        if status == 200:
            winners[rid].append((verb, body))
            assert body["status"] == end["status"], "a 200 was overwritten"
            assert datetime.fromisoformat(body["decided_at"]) < datetime.fromisoformat(
                body["expires_at"]
            )
        else:
            assert status == 409, (status, body)
            assert body["error"]["status"] == end["status"]
    for rid, won in winners.items():
        assert len(won) == 1, f"{rid} has {len(won)} winning decisions"
        verb, _ = won[0]
        assert final[rid]["status"] == {"approve": "approved", "reject": "rejected"}[verb]
    for rid in ids:
        if rid not in winners:
            assert final[rid]["status"] == "expired" and final[rid]["decided_by"] == "timeout"
        events = viewer.get(f"/approvals/{rid}/events").json()["items"]
        assert [e["from_status"] for e in events] == [None, "pending"]

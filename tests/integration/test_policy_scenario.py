"""A replayed scenario: alerts arrive, requests are asked, people approve three times,
the fourth is approved by precedent, a rejection stops the next one; the shadow figures
are checked against the cases counted by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from signoff.db import Database
from tests.conftest import FakeClock
from tests.integration.api_support import Api
from tests.integration.policy_support import ask, policy_api, write_policy
from tests.integration.test_alertmanager import alert, payload, push

POLICY = """
[[rules]]
name = "learned"
mode = "enforce"
actions = ["restart pod *"]
precedent = { approved = 3, within = "30d", by = "fingerprint" }

[[rules]]
name = "any-restart"
actions = ["restart *"]
max_risk = "medium"
"""


async def decide(api: Api, who: str, rid: str, verb: str) -> dict[str, Any]:
    answer = await api.as_(who).post(f"/approvals/{rid}/{verb}", json={})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def test_people_teach_the_policy_and_the_shadow_figures_count_it(
    clocked_db: Database, db_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    path = write_policy(tmp_path / "policy.toml", POLICY)
    async with policy_api(clocked_db, db_url, path) as api:
        fires = payload(alert("web-down", severity="critical", service="web"))
        resolves = payload(alert("web-down", "resolved"))
        made: list[dict[str, Any]] = []
        for n in range(4):  # people approve three times; the fourth is the policy's
            assert (await push(api, fires))["opened"] == 1
            request = await ask(api, "restart pod web-1", fingerprint="web-down")
            made.append(request)
            if n < 3:
                assert request["status"] == "pending"
                await decide(api, "alice", request["id"], "approve")
            else:
                assert request["status"] == "approved"
                assert request["decided_by"] == "policy:learned"
                assert [p["disposition"] for p in request["precedents"]] == [
                    "human_approved"] * 3
            done = await api.as_("bot").post(f"/approvals/{request['id']}/outcome",
                                             json={"succeeded": True})
            assert done.status_code == 200
            assert (await push(api, resolves))["ignored"] == 1  # resolved by the action
            clock.advance(60)
        # A request that asks for people is rejected; the next one is not auto-approved.
        assert (await push(api, fires))["opened"] == 1
        asked = await ask(api, "restart pod web-1", fingerprint="web-down", risk="high",
                          approvers=["bob"])
        await decide(api, "bob", asked["id"], "reject")
        made.append(asked)
        clock.advance(60)
        stopped = await ask(api, "restart pod web-1", fingerprint="web-down")
        assert stopped["status"] == "pending"
        assert stopped["policy"]["decision"] == "none"
        await decide(api, "alice", stopped["id"], "reject")
        made.append(stopped)
        assert (await push(api, resolves))["resolved"] == 1
        clock.advance(60)
        cache = await ask(api, "restart cache")  # no incident; withdrawn
        cancelled = await api.as_("bot").post(f"/approvals/{cache['id']}/cancel")
        assert cancelled.status_code == 200
        risky = await ask(api, "restart db", risk="high")  # people approve what no rule held
        await decide(api, "alice", risky["id"], "approve")
        still = await ask(api, "restart pod web-2")  # pending: not counted
        assert still["status"] == "pending"

        shadow = (await api.as_("viewer").get("/policy/shadow")).json()
        assert shadow == {"rules": [
            # Held only for the fourth (its own approval); missed the three people approved.
            {"rule": "learned", "mode": "enforce", "would_approve": 1, "agreed": 0,
             "disagreed": 0, "undecided": 0, "missed": 3, "agreement_rate": None,
             "disagreements": []},
            # Held for the four web restarts, the stopped one and the cache: people agreed
            # three times, disagreed once, the cache was withdrawn; the db restart (risk
            # high) it did not hold for, and people approved it.
            {"rule": "any-restart", "mode": "shadow", "would_approve": 6, "agreed": 3,
             "disagreed": 1, "undecided": 1, "missed": 1, "agreement_rate": 0.75,
             "disagreements": [stopped["id"]]},
        ]}
        later = (await api.as_("viewer").get(
            "/policy/shadow", params={"since": clock.now.isoformat()})).json()
        assert [(r["would_approve"], r["undecided"], r["missed"]) for r in later["rules"]] == [
            (0, 0, 0), (1, 1, 1)]  # the cache and the db restart ended at that instant
        for bad in ({"since": "yesterday"}, {"since": clock.now.isoformat(),
                                             "until": "2000-01-01T00:00:00Z"}):
            answer = await api.as_("viewer").get("/policy/shadow", params=bad)
            assert answer.status_code == 422

"""The policy at its boundaries, on SQLite and PostgreSQL: each condition, hours across
midnight and time zones, the limit at N and N+1, precedent with exactly N successes and
with one rejection, the kill switch seen by a second replica at once, reload and a
broken file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from signoff.app import create_app
from signoff.db import Database
from signoff.policy import PolicyError
from signoff.settings import Settings
from signoff.tables import events
from tests.conftest import FakeClock
from tests.integration.policy_support import (
    ask,
    incident,
    make_tokens,
    policy_api,
    reasons,
    write_policy,
)

RESTART = """
[[rules]]
name = "watch-everything"
actions = ["*"]

[[rules]]
name = "restart-web"
mode = "enforce"
actions = ["restart pod web-*"]
requesters = ["bot"]
max_risk = "medium"
max_severity = "high"
services = ["web"]
exclude_services = ["db"]
"""


async def test_the_first_enforce_rule_that_holds_approves_and_every_rule_is_recorded(
    clocked_db: Database, db_url: str, tmp_path: Path
) -> None:
    path = write_policy(tmp_path / "policy.toml", RESTART)
    async with policy_api(clocked_db, db_url, path) as api:
        inc = await incident(api, "fp-1")
        done = await ask(api, "Restart pod WEB-1", incident_id=inc["id"], risk="low")
        assert done["status"] == "approved"
        assert done["decided_by"] == "policy:restart-web"
        assert done["disposition"] == "auto_repair"
        assert done["approvals"] == []
        assert done["policy"] == {"decision": "approved", "rule": "restart-web", "evaluations": [
            {"rule": "watch-everything", "mode": "shadow", "holds": True, "reasons": []},
            {"rule": "restart-web", "mode": "enforce", "holds": True, "reasons": []},
        ]}
        trail = (await api.as_("viewer").get(f"/approvals/{done['id']}/events")).json()["items"]
        assert [(e["kind"], e["actor"]) for e in trail] == [
            ("request_created", "bot"), ("request_approved", "policy:restart-web")]
        stats = (await api.as_("viewer").get("/stats")).json()
        assert stats["dispositions"]["auto_repair"] == 1

        # Each failed condition is one reason, in words.
        high = await ask(api, "restart pod web-2", incident_id=inc["id"], risk="high")
        assert high["status"] == "pending"
        assert high["policy"]["decision"] == "none"
        assert high["policy"]["rule"] is None
        assert reasons(high, "restart-web") == ["risk high is above max_risk medium"]
        other = await ask(api, "restart pod web-3", who="bot2", incident_id=inc["id"])
        assert reasons(other, "restart-web") == [
            "requested by bot2, who is not one of requesters bot"]
        nothing = await ask(api, "restart pod web-4")
        assert reasons(nothing, "restart-web") == [
            "the request has no incident, so no severity to compare with max_severity high",
            "the request has no incident with a service, so it is not one of services web"]
        crit = await incident(api, "fp-2", severity="critical")
        assert reasons(await ask(api, "restart pod web-5", incident_id=crit["id"]),
                       "restart-web") == ["severity critical is above max_severity high"]
        db_inc = await incident(api, "fp-3", service="db")
        assert reasons(await ask(api, "restart pod web-6", incident_id=db_inc["id"]),
                       "restart-web") == ["service db is not one of services web",
                                          "service db is in exclude_services"]
        assert reasons(await ask(api, "drop table users", incident_id=inc["id"]),
                       "restart-web") == [
            "action 'drop table users' matches none of actions restart pod web-*"]

        # Requests that ask for people, and placeholders, are never auto-approved.
        for body in ({"required_approvals": 2}, {"approvers": ["alice"]}):
            asked = await ask(api, "restart pod web-7", incident_id=inc["id"], **body)
            assert asked["status"] == "pending"
            assert asked["policy"]["decision"] == "none"
            assert all(not e["holds"] for e in asked["policy"]["evaluations"])
        placeholder = await ask(api, "TBD", incident_id=inc["id"])
        assert placeholder["status"] == "pending"
        assert "placeholder" in reasons(placeholder, "watch-everything")[0]

        metrics = (await api.as_(None).get("http://signoff/metrics")).text
        assert 'signoff_policy_decisions_total{decision="approved",rule="restart-web"} 1.0' \
            in metrics
        assert 'signoff_policy_reasons_total{reason="max_risk",rule="restart-web"} 1.0' \
            in metrics
        assert 'signoff_requests_decided_total{disposition="auto_repair"} 1.0' in metrics


async def test_without_a_policy_file_the_policy_is_null_and_nothing_is_auto_approved(
    clocked_db: Database, db_url: str
) -> None:
    async with policy_api(clocked_db, db_url, None) as api:
        made = await ask(api, "restart pod web-1")
        assert made["policy"] is None
        assert made["status"] == "pending"
        state = (await api.as_("viewer").get("/policy")).json()
        assert state == {"source": None, "loaded_at": None, "rules": [], "error": None,
                         "paused": None}


HOURS = """
[[rules]]
name = "night"
mode = "enforce"
actions = ["restart *"]
hours = "22:00-06:00"
weekdays = ["thu"]
"""


@pytest.mark.parametrize(("utc", "holds", "why"), [
    # 2026-01-01 is a Thursday; Asia/Taipei is UTC+8.
    ("2026-01-01T13:59:59", False, "21:59 Asia/Taipei is outside hours 22:00-06:00"),
    ("2025-12-31T14:00:00", False, "wed (2025-12-31 Asia/Taipei) is not one of weekdays thu"),
    ("2026-01-01T14:00:00", True, None),  # Thursday 22:00 local
    ("2026-01-01T15:59:59", True, None),  # Thursday 23:59:59 local
    ("2026-01-01T16:00:00", False, "fri (2026-01-02 Asia/Taipei) is not one of weekdays thu"),
    ("2025-12-31T21:59:59", True, None),  # Thursday 05:59:59 local, after midnight
    ("2025-12-31T22:00:00", False, "06:00 Asia/Taipei is outside hours 22:00-06:00"),
])
async def test_hours_wrap_midnight_in_the_display_time_zone(
    clocked_db: Database, db_url: str, clock: FakeClock, tmp_path: Path,
    utc: str, holds: bool, why: str | None,
) -> None:
    clock.now = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    path = write_policy(tmp_path / "policy.toml", HOURS)
    async with policy_api(clocked_db, db_url, path, display_tz="Asia/Taipei") as api:
        made = await ask(api, "restart web")
        assert made["status"] == ("approved" if holds else "pending")
        assert reasons(made, "night") == ([] if why is None else [why])


LIMIT = """
[[rules]]
name = "limited"
mode = "enforce"
actions = ["restart *"]
limit = { count = 2, per = "1h" }
"""


async def test_the_limit_counts_per_service_in_the_trailing_window(
    clocked_db: Database, db_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    path = write_policy(tmp_path / "policy.toml", LIMIT)
    async with policy_api(clocked_db, db_url, path) as api:
        web = await incident(api, "fp-web")
        start = clock.now
        for _ in range(2):  # N
            assert (await ask(api, "restart web", incident_id=web["id"]))["status"] == "approved"
            clock.advance(1)
        third = await ask(api, "restart web", incident_id=web["id"])  # N + 1
        assert third["status"] == "pending"
        assert reasons(third, "limited") == [
            "limit reached: 2 auto-approvals by this rule for service web in the last 1h "
            "(limit 2)"]
        api_inc = await incident(api, "fp-api", service="api")  # another service: its own
        assert (await ask(api, "restart api", incident_id=api_inc["id"]))["status"] == "approved"
        clock.now = start + timedelta(hours=1) - timedelta(microseconds=1)
        assert (await ask(api, "restart web", incident_id=web["id"]))["status"] == "pending"
        clock.now = start + timedelta(hours=1)  # the first has left the window
        assert (await ask(api, "restart web", incident_id=web["id"]))["status"] == "approved"
        no_service = [await ask(api, "restart it") for _ in range(3)]
        assert [r["status"] for r in no_service] == ["approved", "approved", "pending"]
        assert "requests with no service" in reasons(no_service[2], "limited")[0]


async def test_creates_at_once_never_take_more_places_than_the_limit(
    clocked_db: Database, db_url: str, tmp_path: Path
) -> None:
    """Eight creates for one service at once, each for an incident of its own (so no
    incident's lock puts them in turn): exactly the limit's two are auto-approved, and the
    others say the limit is reached."""
    path = write_policy(tmp_path / "policy.toml", LIMIT)
    async with policy_api(clocked_db, db_url, path) as api:
        incidents = [await incident(api, f"fp-at-once-{n}") for n in range(8)]
        made = await asyncio.gather(*(ask(api, "restart web", incident_id=i["id"])
                                      for i in incidents))
        approved = [r for r in made if r["status"] == "approved"]
        assert len(approved) == 2, [r["status"] for r in made]
        for r in made:
            if r["status"] == "pending":
                assert reasons(r, "limited")[0].startswith("limit reached: 2 auto-approvals")


PRECEDENT = """
[[rules]]
name = "learned"
mode = "enforce"
actions = ["restart pod *"]
precedent = { approved = 3, within = "30d", by = "fingerprint" }
"""


async def _cycle(api: object, fp: str, *, approve: bool = True) -> dict[str, object]:
    """An incident for ``fp``, a request people decide, and (approved) its success."""
    from tests.integration.api_support import Api

    assert isinstance(api, Api)
    inc = await incident(api, fp)
    made = await ask(api, "restart pod web-1", fingerprint=fp)
    if made["status"] == "approved":
        return made
    verb = "approve" if approve else "reject"
    decided = await api.as_("alice").post(f"/approvals/{made['id']}/{verb}", json={})
    assert decided.status_code == 200, decided.text
    if approve:
        done = await api.as_("bot").post(f"/approvals/{made['id']}/outcome",
                                         json={"succeeded": True})
        assert done.status_code == 200, done.text
    else:
        resolved = await api.as_("alice").post(f"/incidents/{inc['id']}/resolve", json={})
        assert resolved.status_code == 200
    return made


async def test_precedent_needs_exactly_n_successes_and_no_rejection_in_the_window(
    clocked_db: Database, db_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    path = write_policy(tmp_path / "policy.toml", PRECEDENT)
    async with policy_api(clocked_db, db_url, path) as api:
        first = clock.now
        for n in range(3):
            made = await _cycle(api, "fp-1")
            assert made["status"] == "pending"
            assert reasons(made, "learned") == [
                f"only {n} of the 3 approvals by people with a reported success needed for "
                "fingerprint fp-1 in the last 30d"]
            clock.advance(60)
        fourth = await _cycle(api, "fp-1")  # exactly 3 successes
        assert fourth["status"] == "approved"
        assert fourth["decided_by"] == "policy:learned"
        assert len(fourth["precedents"]) == 3  # the three resolved incidents of fp-1
        # Another fingerprint has no precedent of its own.
        assert (await _cycle(api, "fp-2"))["status"] == "pending"
        # 30 days after the first approval it no longer counts: two are not enough.
        clock.now = first + timedelta(days=30)
        done = await api.as_("bot").post(f"/approvals/{fourth['id']}/outcome",
                                         json={"succeeded": True})
        assert done.status_code == 200
        assert (await _cycle(api, "fp-1"))["status"] == "pending"
        # One rejection by a person stops it, however many successes.
        clock.advance(60)
        for _ in range(3):
            await _cycle(api, "fp-3")
            clock.advance(60)
        assert (await _cycle(api, "fp-3"))["status"] == "approved"
        await incident(api, "fp-3")
        rejected = await ask(api, "restart pod web-1", fingerprint="fp-3", approvers=["alice"])
        answer = await api.as_("alice").post(f"/approvals/{rejected['id']}/reject", json={})
        assert answer.status_code == 200
        after = await ask(api, "restart pod web-1", fingerprint="fp-3")
        assert after["status"] == "pending"
        assert reasons(after, "learned") == [
            "a person rejected this action for fingerprint fp-3 in the last 30d (1 rejection(s))"]


async def test_the_kill_switch_is_obeyed_by_a_second_replica_at_once(
    clocked_db: Database, db_url: str, clock: FakeClock, tmp_path: Path
) -> None:
    path = write_policy(tmp_path / "policy.toml", RESTART)
    other = Database.from_settings(Settings(database_url=db_url), clock=clock)
    try:
        tokens = await make_tokens(clocked_db)
        async with policy_api(clocked_db, db_url, path, tokens=tokens) as one, \
                policy_api(other, db_url, path, tokens=tokens) as two:
            inc = await incident(one, "fp-1")
            for who, body, status in (("alice", {"reason": "x"}, 403),
                                      ("bot", {"reason": "x"}, 403),
                                      ("root", {}, 422), ("root", {"reason": ""}, 422),
                                      ("root", {"reason": "  "}, 422)):
                refused = await one.as_(who).post("/policy/pause", json=body)
                assert refused.status_code == status, refused.text
            assert (await one.as_("root").post("/policy/resume")).status_code == 409
            paused = await one.as_("root").post("/policy/pause",
                                                json={"reason": "bad deploy"})
            assert paused.status_code == 200, paused.text
            assert paused.json()["paused"]["by"] == "root"
            again = await one.as_("root").post("/policy/pause", json={"reason": "again"})
            assert again.status_code == 409
            shown = (await two.as_("viewer").get("/policy")).json()["paused"]
            assert shown == {"by": "root", "at": clock.now.isoformat(),
                             "reason": "bad deploy"}
            made = await ask(two, "restart pod web-1", incident_id=inc["id"])
            assert made["status"] == "pending"
            assert made["policy"]["decision"] == "paused"
            assert made["policy"]["rule"] == "restart-web"
            resumed = await two.as_("root").post("/policy/resume")
            assert resumed.status_code == 200
            assert resumed.json()["paused"] is None
            again_made = await ask(one, "restart pod web-1", incident_id=inc["id"])
            assert again_made["status"] == "approved"
        async with clocked_db.engine.connect() as conn:
            audit = (await conn.execute(
                sa.select(events.c.kind, events.c.actor, events.c.detail)
                .where(events.c.kind.in_(["policy_paused", "policy_resumed"]))
                .order_by(events.c.id))).all()
        assert [(a.kind, a.actor) for a in audit] == [
            ("policy_paused", "root"), ("policy_resumed", "root")]
        assert audit[0].detail == {"reason": "bad deploy"}
    finally:
        await other.dispose()


async def test_a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_good_rules(
    clocked_db: Database, db_url: str, tmp_path: Path
) -> None:
    path = write_policy(tmp_path / "policy.toml", RESTART)
    async with policy_api(clocked_db, db_url, path) as api:
        holder = api.app.state.service.policy
        assert holder.refresh() is False  # unchanged
        write_policy(path, LIMIT)
        assert holder.refresh() is True
        state = (await api.as_("viewer").get("/policy")).json()
        assert [r["name"] for r in state["rules"]] == ["limited"]
        assert state["error"] is None
        write_policy(path, LIMIT + "\n[[rules]]\nname = \"limited\"\nactions = [\"x\"]\n")
        holder.refresh()
        state = (await api.as_("viewer").get("/policy")).json()
        assert [r["name"] for r in state["rules"]] == ["limited"]  # kept
        assert state["error"] == "line 9: name: duplicate rule name 'limited'"
        metrics = (await api.as_(None).get("http://signoff/metrics")).text
        assert "signoff_policy_error 1.0" in metrics
        assert (await ask(api, "restart it"))["policy"]["rule"] == "limited"
        write_policy(path, RESTART)
        holder.refresh()
        assert (await api.as_("viewer").get("/policy")).json()["error"] is None
        assert "signoff_policy_error 0.0" in (await api.as_(None).get(
            "http://signoff/metrics")).text
    write_policy(path, "[[rules]]\nname = \"Bad Name\"\nactions = []\n")
    with pytest.raises(PolicyError) as broken:
        create_app(Settings(database_url=db_url, policy_file=str(path)), db=clocked_db)
    assert broken.value.errors[0].startswith("line 2: name")


async def test_a_request_names_its_incident_by_fingerprint_and_carries_precedents(
    clocked_db: Database, db_url: str, tmp_path: Path
) -> None:
    async with policy_api(clocked_db, db_url, None) as api:
        await ask(api, "restart web", fingerprint="nothing-open", expect=404)
        inc = await incident(api, "fp-1")
        await ask(api, "restart web", fingerprint="fp-1", incident_id=inc["id"], expect=422)
        made = await ask(api, "restart web", fingerprint="fp-1")
        assert made["incident_id"] == inc["id"]
        assert made["precedents"] == []
        resolved = await api.as_("alice").post(f"/incidents/{inc['id']}/resolve", json={})
        assert resolved.status_code == 200
        await ask(api, "restart web", fingerprint="fp-1", expect=404)  # none open now
        again = await incident(api, "fp-1")
        later = await ask(api, "restart web", incident_id=again["id"])
        assert [p["incident_id"] for p in later["precedents"]] == [inc["id"]]
        # No entry for its own fingerprint: its service's.
        sibling = await incident(api, "fp-other")
        by_service = await ask(api, "restart web", incident_id=sibling["id"])
        assert [p["incident_id"] for p in by_service["precedents"]] == [inc["id"]]
        listed = (await api.as_("viewer").get("/approvals")).json()["items"]
        # The first request's own incident is resolved now: its entry is a precedent too.
        assert [len(r["precedents"]) for r in listed] == [1, 1, 1]
        assert (await ask(api, "restart web"))["precedents"] == []  # no incident


async def test_two_pauses_at_once_one_wins_and_the_other_is_told(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    path = write_policy(tmp_path / "policy.toml", RESTART)
    other = Database.from_settings(Settings(database_url=db_url))
    try:
        tokens = await make_tokens(db)
        async with policy_api(db, db_url, path, tokens=tokens) as one, \
                policy_api(other, db_url, path, tokens=tokens) as two:
            answers = await asyncio.gather(*(
                api.as_("root").post("/policy/pause", json={"reason": f"from {n}"})
                for n, api in enumerate((one, two, one, two))))
            assert sorted(a.status_code for a in answers) == [200, 409, 409, 409]
            assert all(a.json()["error"]["code"] == "policy_paused"
                       for a in answers if a.status_code == 409)
    finally:
        await other.dispose()

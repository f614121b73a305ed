"""End to end: the real ``signoff serve`` over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.acceptance.conftest import Server, run_signoff, start_server


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def test_nobody_answers_the_request_expires_and_closes_its_incident(server: Server) -> None:
    bot, viewer = server.client("bot"), server.client("viewer")
    incident = bot.post(
        "/incidents",
        json={
            "title": "disk 95% on db-1",
            "severity": "high",
            "service": "db",
            "fingerprint": "disk-db-1",
        },
    ).json()
    created = bot.post(
        "/approvals",
        json={
            "incident_id": incident["id"],
            "action": "expand volume",
            "ttl_seconds": 1,
        },
    )
    assert created.status_code == 201
    request = created.json()
    assert request["status"] == "pending"

    def expired_by_resolver() -> dict | None:  # type: ignore[type-arg]
        body = viewer.get(f"/approvals/{request['id']}").json()
        return body if body["decided_at"] else None

    done = wait_for(expired_by_resolver, timeout=10)
    assert done, "the resolver did not record the expiry"
    assert done["status"] == "expired"
    assert done["decided_by"] == "timeout"
    assert done["disposition"] == "timeout_ignored"
    lateness = (
        datetime.fromisoformat(done["decided_at"]) - datetime.fromisoformat(done["expires_at"])
    ).total_seconds()
    assert 0 <= lateness < 1.0

    closed = viewer.get(f"/incidents/{incident['id']}").json()
    assert closed["status"] == "resolved"
    assert closed["resolution_type"] == "timeout"
    assert closed["disposition"] == "timeout_ignored"
    entries = viewer.get("/knowledge", params={"incident_id": incident["id"]}).json()["items"]
    assert len(entries) == 1 and entries[0]["actions"][0]["status"] == "expired"
    events = viewer.get(f"/approvals/{request['id']}/events").json()["items"]
    assert [(e["from_status"], e["to_status"]) for e in events] == [
        (None, "pending"),
        ("pending", "expired"),
    ]
    stats = viewer.get("/stats").json()
    assert stats["dispositions"]["timeout_ignored"] == 1
    assert stats["timeout_ignored_rate"] == 1.0
    assert stats["human_override_rate"] is None
    # A decision after the deadline is refused with the winning status.
    late = server.client("alice").post(f"/approvals/{request['id']}/approve")
    assert late.status_code == 409
    assert late.json()["error"]["status"] == "expired"
    metrics = server.client().get(server.url + "/metrics").text
    assert "signoff_requests_expired_total 1.0" in metrics


def test_quorum_decision_and_outcome_close_the_incident(server: Server) -> None:
    bot, viewer = server.client("bot"), server.client("viewer")
    incident = bot.post("/incidents", json={"title": "5xx spike", "severity": "critical"}).json()
    request = bot.post(
        "/approvals",
        json={
            "incident_id": incident["id"],
            "action": "rollback api to v41",
            "risk": "high",
            "required_approvals": 2,
            "ttl_seconds": 600,
        },
    ).json()
    assert bot.post(f"/approvals/{request['id']}/approve").status_code == 403  # own request
    first = server.client("alice").post(
        f"/approvals/{request['id']}/approve", json={"comment": "looks right"}
    )
    assert first.status_code == 200 and first.json()["status"] == "pending"
    again = server.client("alice").post(f"/approvals/{request['id']}/approve")
    assert again.status_code == 409
    second = server.client("bob").post(f"/approvals/{request['id']}/approve").json()
    assert second["status"] == "approved"
    assert second["disposition"] == "human_approved"
    assert [a["by"] for a in second["approvals"]] == ["alice", "bob"]
    assert second["decided_at"] < second["expires_at"]
    assert (
        server.client("bot2")
        .post(f"/approvals/{request['id']}/outcome", json={"succeeded": True})
        .status_code
        == 403
    )
    done = bot.post(f"/approvals/{request['id']}/outcome", json={"succeeded": True}).json()
    assert done["outcome"]["succeeded"] is True
    closed = viewer.get(f"/incidents/{incident['id']}").json()
    assert (closed["status"], closed["resolution_type"], closed["disposition"]) == (
        "resolved",
        "action",
        "human_approved",
    )
    stats = viewer.get("/stats").json()
    assert stats["dispositions"]["human_approved"] == 1
    assert stats["human_override_rate"] == 0.0
    metrics = server.client().get(server.url + "/metrics").text
    assert 'signoff_requests_decided_total{disposition="human_approved"} 1.0' in metrics
    assert 'signoff_incidents_resolved_total{resolution_type="action"} 1.0' in metrics
    assert "signoff_requests_created_total 1.0" in metrics


def test_manual_resolution_cancels_pending_requests(server: Server) -> None:
    bot = server.client("bot")
    incident = bot.post("/incidents", json={"title": "queue lag", "severity": "low"}).json()
    request = bot.post("/approvals", json={"incident_id": incident["id"], "action": "scale"}).json()
    resolved = server.client("alice").post(
        f"/incidents/{incident['id']}/resolve", json={"note": "fixed upstream"}
    )
    assert resolved.status_code == 200
    assert resolved.json()["resolution_type"] == "manual"
    assert resolved.json()["disposition"] is None
    after = bot.get(f"/approvals/{request['id']}").json()
    assert (after["status"], after["decided_by"]) == ("cancelled", "incident_resolved")
    metrics = server.client().get(server.url + "/metrics").text
    assert 'signoff_requests_decided_total{disposition="cancelled"} 1.0' in metrics
    assert 'signoff_incidents_resolved_total{resolution_type="manual"} 1.0' in metrics
    again = server.client("alice").post(f"/incidents/{incident['id']}/resolve")
    assert again.status_code == 409 and again.json()["error"]["status"] == "resolved"
    refused = bot.post("/approvals", json={"incident_id": incident["id"], "action": "scale"})
    assert refused.status_code == 409


def test_token_create_prints_the_token_last(server: Server) -> None:
    done = run_signoff(server.env, "token", "create", "ci-bot", "--role", "requester")
    assert done.returncode == 0
    token = done.stdout.strip().splitlines()[-1]
    assert (
        server.client().get("/approvals", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )


def test_resolve_once_drains_overdue_requests(server: Server) -> None:
    bot = server.client("bot")
    ids = [
        bot.post("/approvals", json={"action": f"a{i}", "ttl_seconds": 1}).json()["id"]
        for i in range(5)
    ]
    time.sleep(1.2)
    done = run_signoff(server.env, "resolve", "--once")
    assert done.returncode == 0, done.stderr
    for rid in ids:
        assert bot.get(f"/approvals/{rid}").json()["status"] == "expired"


def test_idempotent_retry_returns_the_original(server: Server) -> None:
    bot = server.client("bot")
    headers = {"Idempotency-Key": "deploy-42"}
    body = {"action": "restart web", "ttl_seconds": 60}
    first = bot.post("/approvals", json=body, headers=headers)
    assert first.status_code == 201
    # The same body, with a default spelled out, is the same request.
    again = bot.post("/approvals", json={**body, "risk": "medium"}, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = bot.post("/approvals", json={**body, "action": "stop web"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    listed = bot.get("/approvals").json()["items"]
    assert [r["id"] for r in listed] == [first.json()["id"]]


def test_a_second_vote_with_a_bad_body_is_still_a_conflict(server: Server) -> None:
    bot, alice = server.client("bot"), server.client("alice")
    rid = bot.post("/approvals", json={"action": "a", "required_approvals": 2}).json()["id"]
    assert alice.post(f"/approvals/{rid}/approve").status_code == 200
    again = alice.post(f"/approvals/{rid}/approve", json={"comment": 5})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_approved"


def test_an_earlier_approver_may_still_reject_and_a_bad_body_says_why(server: Server) -> None:
    bot, alice = server.client("bot"), server.client("alice")
    rid = bot.post("/approvals", json={"action": "a", "required_approvals": 2}).json()["id"]
    assert alice.post(f"/approvals/{rid}/approve").status_code == 200
    bad = alice.post(f"/approvals/{rid}/reject", json={"comment": 5})
    assert bad.status_code == 422  # content, not a conflict: rejecting is still allowed
    done = alice.post(f"/approvals/{rid}/reject", json={"comment": "on second thought"})
    assert done.status_code == 200 and done.json()["status"] == "rejected"


def _started(server: Server) -> dict[str, object]:
    for line in server.log_path.read_text().splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "serve_started":
            found: dict[str, object] = json.loads(line)
            return found
    raise AssertionError(server.log_path.read_text())


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="Linux's /proc")
def test_serve_runs_on_glibcs_allocator_in_its_own_process(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "serve.log")
    try:
        # The same process (a supervisor's pid stays right), started again by execve.
        assert _environ(server.process.pid).get("PYTHONMALLOC") == "malloc"
        assert _started(server)["allocator"] == "malloc"
    finally:
        server.stop()
    assert server.process.returncode == 0


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="Linux's /proc")
def test_serve_keeps_an_allocator_chosen_in_its_environment(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "serve.log",
                          PYTHONMALLOC="pymalloc")
    try:
        assert _started(server)["allocator"] == "pymalloc"
        assert _environ(server.process.pid).get("PYTHONMALLOC") == "pymalloc"
    finally:
        server.stop()

"""Bad input on every route: a 4xx with a message, never a 5xx, and nothing changes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.acceptance.conftest import Server

HUGE = "x" * 20_001
UNKNOWN = str(uuid.uuid4())


def snapshot(server: Server) -> dict[str, Any]:
    viewer = server.client("viewer")
    state: dict[str, Any] = {}
    for path in ("/incidents", "/approvals", "/knowledge"):
        state[path] = viewer.get(path, params={"limit": 500}).json()["items"]
    for request in state["/approvals"]:
        state[request["id"]] = viewer.get(f"/approvals/{request['id']}/events").json()["items"]
    return state


def check(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] and error["message"]


def test_bad_input_is_refused_and_changes_nothing(server: Server) -> None:
    bot, alice = server.client("bot"), server.client("alice")
    incident = bot.post("/incidents", json={"title": "t", "severity": "low"}).json()
    request = bot.post("/approvals", json={"incident_id": incident["id"], "action": "a"}).json()
    rid, iid = request["id"], incident["id"]
    before = snapshot(server)

    bad_incidents = [
        {},
        {"title": "t"},
        {"title": "t", "severity": "urgent"},
        {"title": 5, "severity": "low"},
        {"title": HUGE, "severity": "low"},
        {"title": "t", "severity": "low", "labels": [1]},
        {"title": "t", "severity": "low", "labels": {"k": "v" * 70_000}},
        {"title": "", "severity": "low"},
    ]
    for body in bad_incidents:
        check(bot.post("/incidents", json=body), 422)
    check(
        bot.post("/incidents", content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )

    bad_requests = [
        {},
        {"action": 5},
        {"action": "x" * 1001},
        {"action": "a", "risk": "extreme"},
        {"action": "a", "ttl_seconds": 0},
        {"action": "a", "ttl_seconds": -1},
        {"action": "a", "ttl_seconds": 7 * 86400 + 1},
        {"action": "a", "ttl_seconds": "60"},
        {"action": "a", "ttl_seconds": 1.5},
        {"action": "a", "expires_at": "2001-01-01T00:00:00Z"},
        {"action": "a", "expires_at": "2099-01-01T00:00:00Z"},
        {"action": "a", "expires_at": "2030-01-01T00:00:00"},
        {"action": "a", "expires_at": "tomorrow"},
        {"action": "a", "ttl_seconds": 60, "expires_at": "2030-01-01T00:00:00Z"},
        {"action": "a", "required_approvals": 0},
        {"action": "a", "required_approvals": "2"},
        {"action": "a", "incident_id": "nope"},
        {"action": "a", "params": "string"},
        {"action": "a", "rationale": HUGE},
        {"action": "a", "callback_url": "ftp://x"},
    ]
    for body in bad_requests:
        check(bot.post("/approvals", json=body), 422)
    check(bot.post("/approvals", json={"action": "a", "incident_id": UNKNOWN}), 404)
    check(
        bot.post("/approvals", content=b"[1,2]", headers={"content-type": "application/json"}), 422
    )
    too_big = b'{"action": "' + b"x" * (1024 * 1024) + b'"}'
    check(
        bot.post("/approvals", content=too_big, headers={"content-type": "application/json"}), 413
    )

    for path in (
        "/approvals/not-a-uuid",
        f"/approvals/{UNKNOWN}",
        "/incidents/123",
        f"/incidents/{UNKNOWN}",
        f"/approvals/{UNKNOWN}/events",
        f"/incidents/{UNKNOWN}/events",
    ):
        check(bot.get(path), 404)
    for action in ("approve", "reject"):
        check(alice.post(f"/approvals/{UNKNOWN}/{action}"), 404)
        check(alice.post(f"/approvals/zzz/{action}"), 404)
        check(alice.post(f"/approvals/{rid}/{action}", json={"comment": 5}), 422)
        check(alice.post(f"/approvals/{rid}/{action}", json={"comment": HUGE}), 422)
        check(bot.post(f"/approvals/{rid}/{action}"), 403)
    check(bot.post(f"/approvals/{UNKNOWN}/cancel"), 404)
    check(server.client("bot2").post(f"/approvals/{rid}/cancel", content=b"{oops"), 403)
    check(server.client("bot2").post(f"/approvals/{rid}/cancel"), 403)
    check(bot.post(f"/approvals/{rid}/outcome", json={"succeeded": True}), 409)
    check(bot.post(f"/approvals/{rid}/outcome", json={"succeeded": "yes"}), 409)
    check(alice.post(f"/incidents/{UNKNOWN}/resolve"), 404)
    check(alice.post(f"/incidents/{iid}/resolve", json={"note": HUGE}), 422)
    check(bot.post(f"/incidents/{iid}/resolve"), 403)

    viewer = server.client("viewer")
    for path, params in [
        ("/approvals", {"status": "nope"}),
        ("/approvals", {"limit": 0}),
        ("/approvals", {"limit": 501}),
        ("/approvals", {"limit": "x"}),
        ("/approvals", {"cursor": "garbage"}),
        ("/approvals", {"incident_id": "nope"}),
        ("/incidents", {"status": "closed"}),
        ("/incidents", {"cursor": "!!"}),
        ("/knowledge", {"incident_id": "x"}),
        ("/knowledge", {"limit": 1000}),
        ("/stats", {"since": "yesterday"}),
        ("/stats", {"until": "2026-01-01T00:00:00"}),
        ("/stats", {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
    ]:
        check(viewer.get(path, params=params), 422)
    check(viewer.post("/approvals", json={"action": "a"}), 403)
    check(server.client().get("/approvals"), 401)
    check(server.client().get("/approvals", headers={"Authorization": "Bearer wrong"}), 401)

    assert snapshot(server) == before


def test_pagination_walks_every_item_once(server: Server) -> None:
    bot = server.client("bot")
    made = {bot.post("/approvals", json={"action": f"a{i}"}).json()["id"] for i in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = bot.get("/approvals", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(made) and set(seen) == made

"""Every status the OpenAPI document gives a route, answered by the running server and
checked against the document: status, content type, required headers and body.

What a running server cannot be made to answer on demand (503 from a database that is
down, the rare 409 of a fingerprint race) is driven in process, in
``tests/integration/test_openapi_refusals.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from signoff.notify.slack_presses import sign
from tests.acceptance.conftest import Server, start_server
from tests.acceptance.openapi_support import Conformance, documented_statuses

SECRET = "webhook-secret"
UNKNOWN = str(uuid.uuid4())
JSON = {"content-type": "application/json"}
TOO_LARGE = b'{"x": "' + b"x" * (1024 * 1024) + b'"}'
# Driven in process (tests/integration/test_openapi_refusals.py): every 503, and this.
RACE = ("POST", "/api/v1/incidents", 409)

INCIDENTS = "/api/v1/incidents"
INCIDENT = "/api/v1/incidents/{incident_id}"
RESOLVE = "/api/v1/incidents/{incident_id}/resolve"
INCIDENT_EVENTS = "/api/v1/incidents/{incident_id}/events"
APPROVALS = "/api/v1/approvals"
APPROVAL = "/api/v1/approvals/{request_id}"
APPROVAL_EVENTS = "/api/v1/approvals/{request_id}/events"
APPROVE = "/api/v1/approvals/{request_id}/approve"
REJECT = "/api/v1/approvals/{request_id}/reject"
CANCEL = "/api/v1/approvals/{request_id}/cancel"
OUTCOME = "/api/v1/approvals/{request_id}/outcome"
LINKS = "/api/v1/approvals/{request_id}/links"
TOKENS = "/api/v1/tokens"
WEBHOOK = "/api/v1/telegram/webhook"
SLACK = "/api/v1/slack/interactions"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def slack_signed(body: bytes) -> dict[str, str]:
    """Headers as Slack signs ``body`` with the signing secret, now."""
    timestamp = str(int(time.time()))
    return {**FORM, "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": sign(SECRET, timestamp, body)}


@pytest.fixture
def docs_server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    server = start_server(database_url, tmp_path / "serve.log",
                          SIGNOFF_TELEGRAM_WEBHOOK_SECRET=SECRET,
                          SIGNOFF_SLACK_SIGNING_SECRET=SECRET)
    try:
        yield server
    finally:
        server.stop()


class Caller:
    """Calls the server as a principal and checks each answer against the document."""

    def __init__(self, server: Server, conformance: Conformance) -> None:
        self.server, self.conformance = server, conformance
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def __call__(
        self, who: str | None, method: str, template: str, status: int,
        ids: dict[str, str] | None = None, *, query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None, json: object = None, content: bytes | None = None,
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {self.server.tokens[who]}"} if who else {}
        response = self.http.request(
            method, template.format(**(ids or {})), params=query, json=json, content=content,
            headers={**sent, **(headers or {})},
        )
        self.conformance.check(method, template, response, status, **(ids or {}))
        return response


def test_every_documented_status_of_every_route_conforms(docs_server: Server) -> None:
    document = httpx.get(docs_server.url + "/openapi.json", timeout=10).json()
    conformance = Conformance(document)
    call = Caller(docs_server, conformance)
    try:
        drive(call)
    finally:
        call.http.close()
    elsewhere = {r for r in documented_statuses(document) if r[2] == 503} | {RACE}
    missing = documented_statuses(document) - elsewhere - conformance.seen
    assert not missing, f"documented but not driven: {sorted(missing)}"


def drive(call: Caller) -> None:
    # Successes first, building the rows the refusals need.
    opened = {"title": "disk full", "severity": "high", "fingerprint": "fp-1"}
    incident = call("bot", "POST", INCIDENTS, 201, json=opened).json()
    call("bot", "POST", INCIDENTS, 200, json=opened)
    iid = incident["id"]
    call("viewer", "GET", INCIDENTS, 200, query={"status": "open"})
    call("viewer", "GET", INCIDENT, 200, {"incident_id": iid})
    call("viewer", "GET", INCIDENT_EVENTS, 200, {"incident_id": iid})
    asked = {"incident_id": iid, "action": "restart db", "params": {"n": 1}, "risk": "high",
             "ttl_seconds": 3600}
    key = {"Idempotency-Key": "k-1"}
    pending = call("bot", "POST", APPROVALS, 201, json=asked, headers=key).json()["id"]
    call("bot", "POST", APPROVALS, 200, json=asked, headers=key)
    call("viewer", "GET", APPROVALS, 200)
    call("viewer", "GET", APPROVAL, 200, {"request_id": pending})
    call("viewer", "GET", APPROVAL, 200, {"request_id": pending}, query={"wait": "0.1"})
    call("viewer", "GET", APPROVAL, 422, {"request_id": pending}, query={"wait": "61"})
    call("viewer", "GET", APPROVAL_EVENTS, 200, {"request_id": pending})
    call("bot", "POST", LINKS, 201, {"request_id": pending}, json={"for": "alice"})
    call("root", "GET", TOKENS, 200)
    approved = call("bot", "POST", APPROVALS, 201, json={"action": "a"}).json()["id"]
    call("alice", "POST", APPROVE, 200, {"request_id": approved}, json={"comment": "go"})
    call("bot", "POST", OUTCOME, 200, {"request_id": approved},
         json={"succeeded": False, "detail": "it did not"})
    rejected = call("bot", "POST", APPROVALS, 201, json={"action": "b"}).json()["id"]
    call("alice", "POST", REJECT, 200, {"request_id": rejected})
    cancelled = call("bot", "POST", APPROVALS, 201, json={"action": "c"}).json()["id"]
    call("bot", "POST", CANCEL, 200, {"request_id": cancelled})
    call("alice", "POST", RESOLVE, 200, {"incident_id": iid}, json={"note": "by hand"})
    call("viewer", "GET", "/api/v1/knowledge", 200, query={"incident_id": iid})
    call("viewer", "GET", "/api/v1/stats", 200)
    call("viewer", "GET", "/api/v1/watchdog", 200)
    call(None, "GET", "/healthz", 200)
    call(None, "GET", "/metrics", 200)
    call(None, "POST", WEBHOOK, 200, json={"update_id": 1},
         headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    not_a_press = b'payload=%7B%22type%22%3A%22shortcut%22%7D'
    call(None, "POST", SLACK, 200, content=not_a_press, headers=slack_signed(not_a_press))

    refuse(call, iid=iid, pending=pending, approved=approved, rejected=rejected)


def refuse(call: Caller, *, iid: str, pending: str, approved: str, rejected: str) -> None:
    every: list[tuple[str, str, dict[str, str]]] = [
        ("POST", INCIDENTS, {}), ("GET", INCIDENTS, {}), ("GET", INCIDENT, {"incident_id": iid}),
        ("POST", RESOLVE, {"incident_id": iid}), ("GET", INCIDENT_EVENTS, {"incident_id": iid}),
        ("POST", APPROVALS, {}), ("GET", APPROVALS, {}), ("GET", APPROVAL, {"request_id": pending}),
        ("GET", APPROVAL_EVENTS, {"request_id": pending}),
        ("POST", APPROVE, {"request_id": pending}), ("POST", REJECT, {"request_id": pending}),
        ("POST", CANCEL, {"request_id": pending}), ("POST", OUTCOME, {"request_id": approved}),
        ("GET", "/api/v1/knowledge", {}), ("GET", "/api/v1/stats", {}),
        ("GET", "/api/v1/watchdog", {}), ("POST", LINKS, {"request_id": pending}),
        ("GET", TOKENS, {}),
    ]
    # 401: no token (the webhook: no secret).
    for method, template, ids in every:
        call(None, method, template, 401, ids)
    call(None, "POST", WEBHOOK, 401, json={})
    call(None, "POST", SLACK, 401, content=b"payload=%7B%7D", headers=FORM)

    # 403: a role that may not.
    call("viewer", "POST", INCIDENTS, 403, json={})
    call("bot", "POST", RESOLVE, 403, {"incident_id": iid})
    call("alice", "POST", APPROVALS, 403, json={})
    call("bot", "POST", APPROVE, 403, {"request_id": pending})
    call("bot", "POST", REJECT, 403, {"request_id": pending})
    call("viewer", "POST", CANCEL, 403, {"request_id": pending})
    call("viewer", "POST", OUTCOME, 403, {"request_id": approved})
    call("bot2", "POST", LINKS, 403, {"request_id": pending}, json={"for": "alice"})
    call("viewer", "GET", TOKENS, 403)

    # 404: nothing has that id.
    deciders = {RESOLVE: "alice", APPROVE: "alice", REJECT: "alice", CANCEL: "bot",
                OUTCOME: "bot", LINKS: "bot"}
    for method, template, ids in every:
        if ids:
            unknown = dict.fromkeys(ids, UNKNOWN)
            call(deciders.get(template, "viewer"), method, template, 404, unknown)
    call("bot", "POST", APPROVALS, 404, json={"incident_id": UNKNOWN, "action": "a"})

    # 409: the state has moved on.
    call("bot", "POST", APPROVALS, 409, json={"incident_id": iid, "action": "a"})
    call("alice", "POST", RESOLVE, 409, {"incident_id": iid})
    call("alice", "POST", APPROVE, 409, {"request_id": rejected})
    call("alice", "POST", REJECT, 409, {"request_id": approved})
    call("bot", "POST", CANCEL, 409, {"request_id": rejected})
    call("bot", "POST", OUTCOME, 409, {"request_id": approved}, json={"succeeded": True})
    call("bot", "POST", LINKS, 409, {"request_id": rejected}, json={"for": "alice"})

    # 413: a body over 1 MiB.
    for method, template, ids in every:
        if method == "POST":
            call("root", method, template, 413, ids, content=TOO_LARGE, headers=JSON)
    call(None, "POST", WEBHOOK, 413, content=TOO_LARGE, headers=JSON)
    call(None, "POST", SLACK, 413, content=TOO_LARGE, headers=FORM)

    # 422: bad content.
    call("bot", "POST", INCIDENTS, 422, json={"title": "t"})
    call("viewer", "GET", INCIDENTS, 422, query={"limit": "0"})
    call("alice", "POST", RESOLVE, 422, {"incident_id": _open_incident(call)},
         json={"note": 1})
    call("viewer", "GET", INCIDENT_EVENTS, 422, {"incident_id": iid}, query={"cursor": "%%"})
    call("bot", "POST", APPROVALS, 422, json={"action": "a", "ttl_seconds": 0})
    call("viewer", "GET", APPROVALS, 422, query={"status": "maybe"})
    call("viewer", "GET", APPROVAL_EVENTS, 422, {"request_id": pending}, query={"limit": "501"})
    waiting = {"request_id": call("bot", "POST", APPROVALS, 201, json={"action": "e"}).json()["id"]}
    call("alice", "POST", APPROVE, 422, waiting, json={"comment": 1})
    call("alice", "POST", REJECT, 422, waiting, json={"comment": 1})
    call("bot", "POST", LINKS, 422, waiting, json={"for": "viewer"})
    reported = call("bot", "POST", APPROVALS, 201, json={"action": "d"}).json()["id"]
    call("alice", "POST", APPROVE, 200, {"request_id": reported})
    call("bot", "POST", OUTCOME, 422, {"request_id": reported}, json={"succeeded": "yes"})
    call("viewer", "GET", "/api/v1/knowledge", 422, query={"incident_id": "not-a-uuid"})
    call("viewer", "GET", "/api/v1/stats", 422, query={"since": "yesterday"})
    call(None, "POST", WEBHOOK, 422, content=b"{", headers={
        **JSON, "X-Telegram-Bot-Api-Secret-Token": SECRET})
    call(None, "POST", SLACK, 422, content=b"payload=%7B", headers=slack_signed(b"payload=%7B"))


def _open_incident(call: Caller) -> str:
    body = {"title": "queue backlog", "severity": "low"}
    return str(call("bot", "POST", INCIDENTS, 201, json=body).json()["id"])

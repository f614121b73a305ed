"""The client's pure parts: the body of a request, how a decorated call is described, and
when a wait polls, retries and gives up (on a clock that moves only when told to)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from signoff.client import calls
from signoff.client.errors import SignoffError, Unreachable, refusal


def test_a_request_sends_only_what_is_given() -> None:
    call = calls.create_request("restart", ttl=timedelta(minutes=2), approvers=["group:sre"])
    assert call.body == {"action": "restart", "ttl_seconds": 120, "approvers": ["group:sre"]}
    assert call.headers is None
    keyed = calls.create_request("restart", ttl=1.2, fingerprint="fp", idempotency_key="k")
    assert keyed.body == {"action": "restart", "ttl_seconds": 2, "fingerprint": "fp"}
    assert keyed.headers == {"Idempotency-Key": "k"}


def test_ids_cannot_leave_their_path() -> None:
    assert calls.get_request("../incidents").path == "/approvals/..%2Fincidents"
    assert calls.get_request("x", 0).query is None
    assert calls.get_request("x", 12.5).query == {"wait": "12.500"}


class Color(enum.Enum):
    RED = "red"


@dataclass
class Target:
    host: str
    port: int


def test_json_safe_keeps_json_and_describes_the_rest() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = {"when": moment, "color": Color.RED, "path": Path("/tmp/x"), "items": (1, 2.5),
             "bad": float("nan"), "target": Target("db", 5432), 3: None}
    assert calls.json_safe(value) == {
        "when": "2026-01-02T03:04:05+00:00", "color": "red", "path": "/tmp/x",
        "items": [1, 2.5], "bad": "nan", "target": {"host": "db", "port": 5432}, "3": None}
    deep: list[Any] = []
    deep.append(deep)
    assert isinstance(calls.json_safe(deep), list)  # a cycle ends as text, not a crash


def restart_pod(name: str, namespace: str = "default", *, force: bool = False) -> None:
    pass


def copy(src: str, /, *more: str, verbose: bool = False, **tags: str) -> None:
    pass


class Fleet:
    def drain(self, node: str) -> None:
        pass


def test_a_call_reads_as_python() -> None:
    assert calls.describe_call(restart_pod, ("web-1",), {}) == (
        "restart_pod(name='web-1', namespace='default', force=False)",
        {"name": "web-1", "namespace": "default", "force": False})
    assert calls.describe_call(copy, ("a", "b", "c"), {"team": "sre"}) == (
        "copy('a', 'b', 'c', verbose=False, team='sre')",
        {"src": "a", "more": ["b", "c"], "verbose": False, "team": "sre"})
    assert calls.describe_call(Fleet.drain, (Fleet(), "n1"), {}) == (
        "drain(node='n1')", {"node": "n1"})
    action, params = calls.describe_call(restart_pod, ("x" * 5000,), {})
    assert len(action) < 200 and params["name"] == "x" * 5000
    with pytest.raises(TypeError):
        calls.describe_call(restart_pod, (), {"nope": 1})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pending(expires_in: float) -> dict[str, Any]:
    expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
    return {"status": "pending", "expires_at": expires_at.isoformat()}


def test_a_wait_reads_first_then_long_polls_until_its_timeout() -> None:
    clock = Clock()
    plan = calls.Waiting(150, clock=clock)
    assert plan.poll() == 0
    assert not plan.done(pending(600))
    assert plan.poll() == calls.MAX_WAIT
    clock.now += 100
    assert plan.poll() == 50
    assert not plan.done(pending(600))
    clock.now += 50
    assert plan.done(pending(600))  # time is up: the answer is "still pending"
    assert calls.Waiting(None, clock=clock).done({"status": "approved"})


def test_a_wait_retries_what_may_pass_until_its_timeout_and_no_further() -> None:
    clock = Clock()
    plan = calls.Waiting(2, clock=clock)
    down = Unreachable("http://x", ConnectionRefusedError("refused"))
    pauses = []
    with pytest.raises(Unreachable):
        while True:
            pauses.append(plan.pause(down))
            clock.now += pauses[-1]
    assert pauses == [0.25, 0.5, 1.0, 0.25] and clock.now == 102
    busy = SignoffError(503, "unavailable", "the database is unavailable; try again")
    assert calls.Waiting(2, clock=clock).pause(busy) == 0.25
    with pytest.raises(SignoffError):
        calls.Waiting(2, clock=clock).pause(SignoffError(404, "not_found", "No such request"))


def test_without_a_timeout_a_wait_retries_until_past_the_deadline() -> None:
    clock = Clock()
    plan = calls.Waiting(None, clock=clock)
    down = Unreachable("http://x", ConnectionRefusedError("refused"))
    assert not plan.done(pending(300))
    clock.now += 300 + calls.RETRY_GRACE - 10
    assert plan.pause(down) == 0.25  # the deadline and the grace are not over yet
    clock.now += 20
    with pytest.raises(Unreachable):
        plan.pause(down)


def test_a_refusal_that_is_not_signoffs_still_reads() -> None:
    answer = httpx.Response(502, text="<html><body>Bad gateway</body></html>")
    error = refusal(answer)
    assert (error.status, error.code) == (502, "http_502")
    assert "Bad gateway" in error.message
    conflict = refusal(httpx.Response(409, json={"error": {
        "code": "request_not_pending", "message": "The request is\n no longer pending.",
        "status": "expired"}}))
    assert conflict.message == "The request is no longer pending."
    assert conflict.current_status == "expired"

"""``GET /approvals/{id}?wait=S`` on a real server: woken by the transition that ended the
request (in the process, and from another replica), answered ``expired`` at the deadline,
bounded by S, refused when S is out of range, and nothing left behind by a client that
goes away or by a server that shuts down."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Server, start_server
from tests.acceptance.test_edge import answers_counted


def waiters(server: Server) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith("signoff_long_poll_waiters "):
            return float(line.split()[1])
    raise AssertionError("no signoff_long_poll_waiters gauge")


def until(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def wait_in_background(server: Server, rid: str, seconds: float) -> tuple[
        threading.Thread, dict[str, Any]]:
    """A long-poll in a thread; ``result`` gets its answer and when it came."""
    result: dict[str, Any] = {}
    viewer = httpx.Client(base_url=server.url + "/api/v1", timeout=90,
                          headers={"Authorization": f"Bearer {server.tokens['viewer']}"})

    def run() -> None:
        with viewer:
            response = viewer.get(f"/approvals/{rid}", params={"wait": seconds})
            result.update(response=response, at=time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    until(lambda: waiters(server) >= 1)
    return thread, result


ENDINGS = {
    "approve": ("alice", lambda rid: (f"/approvals/{rid}/approve", {}), "approved"),
    "reject": ("alice", lambda rid: (f"/approvals/{rid}/reject", {}), "rejected"),
    "cancel": ("bot", lambda rid: (f"/approvals/{rid}/cancel", None), "cancelled"),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_waiter_is_woken_by_the_transition(server: Server, ending: str) -> None:
    who, route, status = ENDINGS[ending]
    rid = server.client("bot").post("/approvals", json={"action": "restart"}).json()["id"]
    thread, result = wait_in_background(server, rid, 30)
    path, body = route(rid)
    decided = server.client(who).post(path, json=body)
    committed = time.monotonic()
    assert decided.status_code == 200, decided.text
    thread.join(10)
    assert result["response"].status_code == 200
    assert result["response"].json()["status"] == status
    assert result["at"] - committed < 1.0  # woken, not timed out
    until(lambda: waiters(server) == 0)


def test_a_wait_answers_expired_at_the_deadline(server: Server) -> None:
    bot, viewer = server.client("bot"), server.client("viewer")
    made = bot.post("/approvals", json={"action": "restart", "ttl_seconds": 1}).json()
    started = time.monotonic()
    answer = viewer.get(f"/approvals/{made['id']}", params={"wait": 30})
    took = time.monotonic() - started
    assert answer.status_code == 200
    assert answer.json()["status"] == "expired"
    assert answer.json()["disposition"] == "timeout_ignored"
    assert took < 3.0, took


def test_a_wait_is_bounded_and_an_ended_request_answers_at_once(server: Server) -> None:
    bot, alice, viewer = (server.client(n) for n in ("bot", "alice", "viewer"))
    rid = bot.post("/approvals", json={"action": "restart", "ttl_seconds": 600}).json()["id"]
    started = time.monotonic()
    answer = viewer.get(f"/approvals/{rid}", params={"wait": "0.5"})
    assert 0.45 < time.monotonic() - started < 3.0
    assert answer.json()["status"] == "pending"
    assert viewer.get(f"/approvals/{rid}", params={"wait": 0}).json()["status"] == "pending"
    alice.post(f"/approvals/{rid}/approve")
    started = time.monotonic()
    assert viewer.get(f"/approvals/{rid}", params={"wait": 60}).json()["status"] == "approved"
    assert time.monotonic() - started < 1.0


def test_bad_waits_are_refused_in_contract_order(server: Server) -> None:
    bot, viewer = server.client("bot"), server.client("viewer")
    rid = bot.post("/approvals", json={"action": "restart"}).json()["id"]
    for bad in ("-1", "60.5", "nan", "banana", "inf", ""):
        answer = viewer.get(f"/approvals/{rid}", params={"wait": bad})
        assert answer.status_code == 422, (bad, answer.text)
        assert "wait" in answer.json()["error"]["message"]
    unknown = "00000000-0000-0000-0000-000000000000"
    assert viewer.get(f"/approvals/{unknown}", params={"wait": "banana"}).status_code == 404
    assert viewer.get("/approvals/nope", params={"wait": 5}).status_code == 404
    anonymous = server.client(None)
    assert anonymous.get(f"/approvals/{rid}", params={"wait": "banana"}).status_code == 401


def test_many_waiters_on_one_request(server: Server) -> None:
    bot, alice = server.client("bot"), server.client("alice")
    rid = bot.post("/approvals", json={"action": "restart"}).json()["id"]
    token = server.tokens["viewer"]

    def wait() -> str:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            return str(client.get(f"/approvals/{rid}", params={"wait": 30}).json()["status"])

    with ThreadPoolExecutor(40) as pool:
        answers = [pool.submit(wait) for _ in range(40)]
        until(lambda: waiters(server) == 40, within=20)
        alice.post(f"/approvals/{rid}/approve")
        assert [a.result(10) for a in answers] == ["approved"] * 40
    until(lambda: waiters(server) == 0)


def test_a_client_gone_mid_wait_leaves_nothing_behind(server: Server) -> None:
    rid = server.client("bot").post("/approvals", json={"action": "restart"}).json()["id"]
    path = "/api/v1/approvals/{request_id}"
    gone_before = answers_counted(server, path, 499)
    client = httpx.Client(base_url=server.url + "/api/v1", timeout=0.5,
                          headers={"Authorization": f"Bearer {server.tokens['viewer']}"})
    with pytest.raises(httpx.ReadTimeout), client:
        client.get(f"/approvals/{rid}", params={"wait": 60})
    until(lambda: waiters(server) == 0, within=5)
    assert answers_counted(server, path, 499) == gone_before + 1


@pytest.fixture
def two_replicas(db_url_postgres: str, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    first = start_server(db_url_postgres, tmp_path / "a.log")
    second = start_server(db_url_postgres, tmp_path / "b.log")
    second.tokens = first.tokens
    yield first, second
    second.stop()
    first.stop()


@pytest.mark.postgres
def test_a_waiter_is_woken_by_a_decision_on_another_replica(
    two_replicas: tuple[Server, Server],
) -> None:
    here, there = two_replicas
    for attempt in range(5):
        rid = here.client("bot").post("/approvals", json={"action": f"restart {attempt}"})
        rid = rid.json()["id"]
        thread, result = wait_in_background(here, rid, 30)
        there.client("alice").post(f"/approvals/{rid}/approve")
        committed = time.monotonic()
        thread.join(10)
        assert result["response"].json()["status"] == "approved"
        assert result["at"] - committed < 0.5, result["at"] - committed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_shutdown_answers_its_waiters(database_url: str, tmp_path: Path, sig: int) -> None:
    server = start_server(database_url, tmp_path / "serve.log")
    try:
        rid = server.client("bot").post("/approvals", json={"action": "restart"}).json()["id"]
        thread, result = wait_in_background(server, rid, 60)
        server.process.send_signal(sig)
        signalled = time.monotonic()
        thread.join(15)
        assert result["response"].status_code == 200
        assert result["response"].json()["status"] == "pending"
        assert result["at"] - signalled < 5.0
        server.process.wait(15)
    finally:
        server.stop()

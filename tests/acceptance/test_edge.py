"""The HTTP edge of a real server: every answer counted, a crash answered in the error
shape with a request id that leads to its traceback, bodies limited however they come."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import Server, start_server

JSON = {"content-type": "application/json"}
MIB = 1024 * 1024


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    server = start_server(f"sqlite:///{tmp_path}/signoff.db", tmp_path / "serve.log")
    yield server
    server.stop()


def answers_counted(server: Server, path: str, status: int) -> float:
    """``signoff_http_requests_total`` for one route template and status."""
    text = httpx.get(server.url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("signoff_http_requests_total{") and f'route="{path}"' in line \
                and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def log_lines(server: Server) -> list[dict[str, object]]:
    lines = []
    for line in server.log_path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"raw": line})
    return lines


def test_a_crash_is_answered_in_the_error_shape_counted_and_logged(
    sqlite_server: Server, tmp_path: Path
) -> None:
    bot = sqlite_server.client("bot")
    made = bot.post("/approvals", json={"action": "restart", "params": {"n": 1}}).json()
    # A row this version cannot read (written by hand, or by a broken tool): the read
    # fails in a way no handler expects.
    with sqlite3.connect(tmp_path / "signoff.db") as conn:
        changed = conn.execute("UPDATE approval_requests SET params = '{not json' WHERE id = ?",
                               (made["id"].replace("-", ""),)).rowcount
        if not changed:
            changed = conn.execute("UPDATE approval_requests SET params = '{not json' WHERE id = ?",
                                   (made["id"],)).rowcount
    assert changed == 1
    path = "/api/v1/approvals/{request_id}"
    before = answers_counted(sqlite_server, path, 500)

    response = bot.get(f"/approvals/{made['id']}")

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "internal"
    assert error["message"]
    request_id = error["request_id"]
    assert request_id and response.headers["x-request-id"] == request_id
    assert answers_counted(sqlite_server, path, 500) == before + 1
    time.sleep(0.2)
    logged = [line for line in log_lines(sqlite_server)
              if line.get("request_id") == request_id]
    assert len(logged) == 1, logged
    assert logged[0]["level"] == "error"
    assert "Traceback" in str(logged[0].get("exception")), logged[0]
    # The server logs the crash once, in its own format: not also uvicorn's plain text.
    assert not any("Exception in ASGI application" in str(line) for line in
                   log_lines(sqlite_server))

    # A client's own request id is kept, when it is a sane one.
    again = bot.get(f"/approvals/{made['id']}", headers={"X-Request-ID": "trace-42"})
    assert again.json()["error"]["request_id"] == "trace-42"
    odd = bot.get(f"/approvals/{made['id']}", headers={"X-Request-ID": "a b;" * 100})
    assert odd.json()["error"]["request_id"] != "a b;" * 100
    # The server goes on answering.
    assert bot.get("/incidents").status_code == 200


def test_a_dropped_connection_is_counted(sqlite_server: Server) -> None:
    path = "/api/v1/approvals"
    before = answers_counted(sqlite_server, path, 499)
    host, port = sqlite_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /api/v1/approvals HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + sqlite_server.tokens["bot"].encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"action\":"
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while answers_counted(sqlite_server, path, 499) != before + 1:
        assert time.monotonic() < deadline, "the dropped connection was not counted"
        time.sleep(0.1)
    assert sqlite_server.client("viewer").get("/approvals").json()["items"] == []


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"action": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


@pytest.mark.parametrize("route", ["/approvals", "/incidents",
                                   "/approvals/{id}/approve", "/approvals/{id}/outcome"])
def test_a_chunked_body_over_the_limit_is_413(sqlite_server: Server, route: str) -> None:
    bot, alice = sqlite_server.client("bot"), sqlite_server.client("alice")
    made = bot.post("/approvals", json={"action": "restart"}).json()
    who = alice if route.endswith("approve") else bot
    before = answers_counted(sqlite_server, "/api/v1" + route.replace("{id}", "{request_id}"),
                             413)

    response = who.post(route.replace("{id}", made["id"]), content=_chunks(MIB + 1),
                        headers=JSON)

    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "too_large"
    assert answers_counted(
        sqlite_server, "/api/v1" + route.replace("{id}", "{request_id}"), 413) == before + 1
    # Nothing changed.
    assert bot.get(f"/approvals/{made['id']}").json()["status"] == "pending"
    assert len(bot.get("/approvals").json()["items"]) == 1


def test_a_chunked_body_within_the_limit_is_read(sqlite_server: Server) -> None:
    bot = sqlite_server.client("bot")
    body = json.dumps({"action": "restart", "rationale": "y" * 10_000}).encode()
    response = bot.post("/approvals", content=iter([body[:5000], body[5000:]]), headers=JSON)
    assert response.status_code == 201, response.text


def test_a_body_sent_without_the_json_header_is_explained(sqlite_server: Server) -> None:
    bot = sqlite_server.client("bot")
    form = bot.post("/approvals", content=b"action=restart",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 422
    assert "Content-Type: application/json" in form.json()["error"]["message"]
    bare = bot.post("/incidents", content=b"title=x")
    assert bare.status_code == 422
    assert "no Content-Type" in bare.json()["error"]["message"]
    # Sent as JSON, the message is only about the JSON.
    sent = bot.post("/approvals", content=b"action=restart", headers=JSON)
    assert "Content-Type" not in sent.json()["error"]["message"]
    # JSON is taken whatever its header says.
    plain = bot.post("/approvals", content=b'{"action": "restart"}',
                     headers={"content-type": "text/plain"})
    assert plain.status_code == 201, plain.text


def test_refusals_read_as_one_sentence(sqlite_server: Server) -> None:
    bot, alice = sqlite_server.client("bot"), sqlite_server.client("alice")
    placeholder = bot.post("/approvals", json={"action": "TBD"}).json()
    assert placeholder["needs_analysis"] is True
    refused = alice.post(f"/approvals/{placeholder['id']}/approve").json()["error"]
    assert refused["code"] == "needs_analysis"
    assert "\n" not in refused["message"] and "  " not in refused["message"]

    url = sqlite_server.url
    messages = [
        httpx.get(url + "/api/v1/approvals").json()["error"]["message"],
        httpx.get(url + "/api/v1/approvals", headers={"Authorization": "Basic x"}).json(),
        httpx.get(url + "/api/v1/approvals", headers={"Authorization": "Bearer nope"}).json(),
        httpx.post(url + "/api/v1/telegram/webhook", json={}).json(),
    ]
    messages = [m if isinstance(m, str) else m["error"]["message"] for m in messages]
    assert len(set(messages)) == len(messages), messages
    for message in messages:
        assert message.startswith("A valid "), message
        assert "required: " in message, message

"""Input that JSON allows but a database or an encoder cannot take: refused with 422 on
both databases, and nothing changes. Each case here once answered 500 or 503 on PostgreSQL
(found by the schemathesis run in ``test_openapi.py``)."""

from __future__ import annotations

from tests.acceptance.conftest import Server
from tests.fuzz.support import Snapshots, unexplained_changes

JSON = {"content-type": "application/json"}
DEEP = 40  # past the nesting allowed in params and labels


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


HOSTILE_CREATES = {
    "NUL in a title": ("/incidents", '{"title": "a\\u0000", "severity": "low"}'),
    "NUL in a fingerprint": (
        "/incidents", '{"title": "t", "severity": "low", "fingerprint": "\\u0000"}'),
    "NUL in a label value": (
        "/incidents", '{"title": "t", "severity": "low", "labels": {"k": "\\u0000"}}'),
    "NUL in a label key": (
        "/incidents", '{"title": "t", "severity": "low", "labels": {"\\u0000": 1}}'),
    "a lone surrogate in a label": (
        "/incidents", '{"title": "t", "severity": "low", "labels": {"k": "\\ud800"}}'),
    "NUL in an action": ("/approvals", '{"action": "restart\\u0000"}'),
    "NUL in a rationale": ("/approvals", '{"action": "a", "rationale": "\\u0000"}'),
    "NUL in a callback URL": (
        "/approvals", '{"action": "a", "callback_url": "http://x/\\u0000"}'),
    "NaN in params": ("/approvals", '{"action": "a", "params": {"x": NaN}}'),
    "Infinity in params": ("/approvals", '{"action": "a", "params": {"x": [-Infinity]}}'),
    "params nested too deep": (
        "/approvals", '{"action": "a", "params": {"x": ' + nested(DEEP) + "}}"),
    "labels nested past the decoder": (
        "/incidents", '{"title": "t", "severity": "low", "labels": {"x": '
        + nested(5000) + "}}"),
    "a number too long to read": (
        "/approvals", '{"action": "a", "params": {"x": 1' + "0" * 5000 + "}}"),
    "bytes that are not UTF-8": ("/approvals", b'{"action": "\xff"}'),
}


def test_hostile_creates_are_refused(server: Server, database_url: str) -> None:
    bot = server.client("bot")
    with Snapshots(database_url) as snapshots:
        before = snapshots.take()
        for case, (path, body) in HOSTILE_CREATES.items():
            content = body if isinstance(body, bytes) else body.encode()
            response = bot.post(path, content=content, headers=JSON)
            assert response.status_code == 422, (case, response.text)
            assert response.json()["error"]["code"] == "invalid", case
        assert unexplained_changes(before, snapshots.take()) == []


def test_hostile_decisions_filters_and_notes_are_refused(
    server: Server, database_url: str
) -> None:
    bot, alice, viewer = server.client("bot"), server.client("alice"), server.client("viewer")
    rid = bot.post("/approvals", json={"action": "a", "ttl_seconds": 3600}).json()["id"]
    iid = bot.post("/incidents", json={"title": "t", "severity": "low"}).json()["id"]
    bodies = [
        '{"comment": "\\u0000"}',
        '{"comment": "\\ud800"}',
        '{"comment": 1' + "0" * 5000 + "}",
        '{"comment": ' + nested(100_000) + "}",
    ]
    with Snapshots(database_url) as snapshots:
        before = snapshots.take()
        for body in bodies:
            for action in ("approve", "reject"):
                answer = alice.post(f"/approvals/{rid}/{action}", content=body.encode(),
                                    headers=JSON)
                assert answer.status_code == 422, (action, body[:40], answer.text)
            answer = alice.post(f"/incidents/{iid}/resolve",
                                content=body.replace("comment", "note").encode(), headers=JSON)
            assert answer.status_code == 422, (body[:40], answer.text)
        answer = bot.post(f"/approvals/{rid}/outcome", content=b'{"succeeded": true, '
                          b'"detail": "\\u0000"}', headers=JSON)
        assert answer.status_code == 409  # state is refused before content
        for path, params in [("/incidents", {"service": "\x00"}),
                             ("/knowledge", {"service": "a\x00b"}),
                             ("/knowledge", {"fingerprint": "\x00"})]:
            answer = viewer.get(path, params=params)
            assert answer.status_code == 422, (path, answer.text)
        assert unexplained_changes(before, snapshots.take()) == []
    assert server.process.poll() is None

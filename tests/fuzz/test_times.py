"""Every time the API takes, over the whole range ``datetime`` allows, with any offset.

``datetime`` accepts offsets up to ±23:59 at both ends of its calendar, so some times
parse but have no UTC instant (``0001-01-01T00:00:00+14:00``). Each route that takes a
time — ``expires_at`` on a create, ``since``/``until`` on the statistics, the time in a
list cursor — must handle a time it can hold and refuse with 422 one it cannot: never a
5xx, on either database.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.acceptance.conftest import Server

OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
EDGES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
         "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999-23:59",
         "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"]
FUZZ = settings(max_examples=60, deadline=None, database=None)


def times(near: datetime | None = None) -> st.SearchStrategy[datetime]:
    """Aware times anywhere in ``datetime``'s range, and (with ``near``) within a week
    and a day of it, where a deadline can be valid."""
    anywhere = st.datetimes(min_value=datetime.min, max_value=datetime.max, timezones=OFFSETS)
    if near is None:
        return anywhere
    close = st.timedeltas(min_value=timedelta(days=-1), max_value=timedelta(days=8)).map(
        lambda delta: (near + delta).replace(tzinfo=None)
    )
    local = st.tuples(close, OFFSETS).map(
        lambda pair: (pair[0].replace(tzinfo=UTC).astimezone(pair[1]))
    )
    return st.one_of(anywhere, local)


def in_utc(text: str) -> datetime | None:
    """``text`` in UTC, or None when UTC cannot hold it."""
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except OverflowError:
        return None


def refused(response: httpx.Response) -> bool:
    assert response.status_code < 500, response.text
    if response.status_code == 422:
        assert response.json()["error"]["code"] == "invalid", response.text
        return True
    return False


def test_stats_take_any_time(server: Server) -> None:
    viewer = server.client("viewer")

    @FUZZ
    @given(since=times().map(datetime.isoformat), until=times().map(datetime.isoformat))
    @example(since=EDGES[0], until=EDGES[1])
    @example(since=EDGES[4], until=EDGES[5])
    def check(since: str, until: str) -> None:
        start, end = in_utc(since), in_utc(until)
        response = viewer.get("/stats", params={"since": since, "until": until})
        if start is None or end is None or start > end:
            assert refused(response), (since, until)
            return
        assert response.status_code == 200, response.text
        body = response.json()
        assert datetime.fromisoformat(body["since"]) == start
        assert datetime.fromisoformat(body["until"]) == end

    check()
    for edge in EDGES:
        for name in ("since", "until"):
            response = viewer.get("/stats", params={name: edge})
            assert refused(response) == (in_utc(edge) is None), (name, edge, response.text)


def test_expires_at_takes_any_time(server: Server) -> None:
    bot = server.client("bot")
    week = timedelta(days=7)  # the default SIGNOFF_MAX_TTL

    @FUZZ
    @given(when=times(near=datetime.now(UTC)).map(datetime.isoformat))
    @example(when=EDGES[0])
    @example(when=EDGES[1])
    @example(when=EDGES[3])
    def check(when: str) -> None:
        deadline = in_utc(when)
        response = bot.post("/approvals", json={"action": "restart", "expires_at": when})
        if deadline is None:
            assert refused(response), (when, response.text)
            return
        ahead = deadline - datetime.now(UTC)
        # Within a few seconds of either bound it may go either way: the server read
        # its clock at another moment than this test.
        if min(abs(ahead), abs(ahead - week)) < timedelta(seconds=5):
            return
        if ahead <= timedelta(0) or ahead > week:
            assert refused(response), (when, response.text)
            return
        assert response.status_code == 201, (when, response.text)
        assert datetime.fromisoformat(response.json()["expires_at"]) == deadline

    check()


def _cursor(when: str) -> str:
    raw = json.dumps([when, str(uuid.uuid4())]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_cursors_take_any_time(server: Server) -> None:
    viewer = server.client("viewer")
    bot = server.client("bot")
    incident = bot.post("/incidents", json={"title": "t", "severity": "low"}).json()["id"]
    made = bot.post("/approvals", json={"action": "restart", "incident_id": incident})
    request = made.json()["id"]
    lists = ["/approvals", "/incidents", "/knowledge"]

    @FUZZ
    @given(when=times().map(datetime.isoformat), path=st.sampled_from(lists))
    @example(when=EDGES[0], path=lists[0])
    @example(when=EDGES[1], path=lists[1])
    @example(when=EDGES[0], path=lists[2])
    def check(when: str, path: str) -> None:
        response = viewer.get(path, params={"cursor": _cursor(when)})
        if in_utc(when) is None:
            assert refused(response), (path, when)
        else:
            assert response.status_code == 200, (path, when, response.text)

    check()

    # The events' cursor holds an event number: one past what the database holds is
    # refused like a time past what UTC holds.
    for path in (f"/approvals/{request}/events", f"/incidents/{incident}/events"):
        for after, ok in ((2**63 - 1, True), (2**63, False), (-(2**63), True), (10**40, False)):
            raw = json.dumps([str(after)]).encode()
            cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            response = viewer.get(path, params={"cursor": cursor})
            assert refused(response) != ok, (path, after, response.text)

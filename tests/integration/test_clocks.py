"""One clock: the database's on PostgreSQL, aware UTC everywhere.

- ``signoff serve`` whose process clock is an hour ahead of, or behind, PostgreSQL's
  gives the outcomes it gives on a true clock: deadlines, decisions, expiry, reads and
  statistics all follow the database clock. The skew comes from libfaketime (Debian's
  ``faketime``, when installed: every clock call of the process is skewed) and, everywhere,
  from a launcher that skews ``datetime.now`` and ``time.time`` as signoff's modules see
  them. On SQLite the process clock is the only clock, so the same skew shows: that run
  proves the scenario notices a clock that leaks.
- Naive datetimes are refused at every boundary: request bodies, query parameters and
  cursors, store functions and columns, an injected clock, a NOTIFY payload.
- SQLite keeps instants as fixed-width UTC text: round trips keep microseconds, and text
  order is time order.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from signoff import store
from signoff.app import create_app
from signoff.db import Database
from signoff.lifecycle import Role
from signoff.listener import deadline_listener
from signoff.settings import Settings, normalise_database_url
from signoff.tables import UTCDateTime, metadata
from tests.acceptance.conftest import PRINCIPALS, Server, _make_tokens, free_port
from tests.conftest import _truncate
from tests.integration.store_support import new_incident, new_request

HOUR = 3600.0
MAX_TTL = timedelta(minutes=30)
# signoff carries PostgreSQL's clock forward from a reading (``signoff.clock``), exact to
# within half the round trip that fetched it: on a loaded machine a few milliseconds. An
# instant it stamps may stray that far outside the window the test measured around it;
# an hour's skew leaking through would not fit.
CLOCK_ERROR = timedelta(milliseconds=100)
# Preloaded into the server itself: the ``faketime`` command would fork it as a child of its
# own, and a child left behind would go on expiring requests in the test database.
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)

# Starts ``signoff serve`` with the wall clock seen by signoff's modules moved by argv[1]
# seconds: ``datetime.now``/``utcnow`` in every signoff module, and ``time.time``.
SKEWED_LAUNCHER = """
import importlib, pkgutil, sys, time
from datetime import datetime, timedelta

skew = timedelta(seconds=float(sys.argv[1]))


class _Any(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, datetime)


class SkewedDatetime(datetime, metaclass=_Any):
    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + skew

    @classmethod
    def utcnow(cls):
        return datetime.utcnow() + skew


import signoff

for info in pkgutil.walk_packages(signoff.__path__, "signoff."):
    if info.name.startswith(("signoff.migrations", "signoff.__main__")):
        continue
    module = importlib.import_module(info.name)
    if getattr(module, "datetime", None) is datetime:
        module.datetime = SkewedDatetime
_time = time.time
time.time = lambda: _time() + skew.total_seconds()
sys.argv = ["signoff", "serve"]
from signoff.cli import main

main()
"""


# -- a skewed server and the reference clock -----------------------------------------------


def launch(how: str, skew: float) -> tuple[list[str], dict[str, str]]:
    """The command and extra environment of a server whose wall clock is ``skew`` s off."""
    if how == "faketime":
        assert LIBFAKETIME is not None
        return [sys.executable, "-m", "signoff", "serve"], {
            "LD_PRELOAD": LIBFAKETIME, "FAKETIME": f"{skew:+.0f}s",
            # The wall clock is what drifts; timers keep their true pace.
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
    return [sys.executable, "-c", SKEWED_LAUNCHER, str(skew)], {}


def stop(server: Server) -> None:
    """Stop the server and anything it started: its whole process group."""
    for client in server.clients.values():
        client.close()
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
    except ProcessLookupError:
        pass


@contextmanager
def skewed_server(database_url: str, workdir: Path, how: str, skew: float) -> Iterator[Server]:
    """``signoff serve`` whose process clock is ``skew`` seconds off the true one."""
    port = free_port()
    command, skewing = launch(how, skew)
    env = {
        **os.environ, "SIGNOFF_DATABASE_URL": database_url, "SIGNOFF_PORT": str(port),
        "SIGNOFF_HOST": "127.0.0.1", "SIGNOFF_LOG_FORMAT": "json",
        "SIGNOFF_MAX_TTL": f"{MAX_TTL.total_seconds():.0f}s", **skewing,
    }
    log_path = workdir / f"serve-{how}-{skew:+.0f}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(url=f"http://127.0.0.1:{port}", env=env, process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"signoff serve exited: {log_path.read_text()}")
            try:
                if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"signoff serve did not start: {log_path.read_text()}")
            time.sleep(0.1)
        server.tokens.update(asyncio.run(_make_tokens(database_url, PRINCIPALS)))
        yield server
    finally:
        stop(server)


class Reference:
    """The clock outcomes must follow: PostgreSQL's, or on SQLite this process's own."""

    def __init__(self, database_url: str) -> None:
        self.postgres = database_url.startswith("postgres")
        self._runner = asyncio.Runner()
        self._conn: Any = None
        if self.postgres:
            dsn = "postgresql://" + normalise_database_url(database_url).split("://", 1)[1]
            self._conn = self._runner.run(asyncpg.connect(dsn))

    def now(self) -> datetime:
        if self._conn is None:
            return datetime.now(UTC)
        value: datetime = self._runner.run(self._conn.fetchval("SELECT clock_timestamp()"))
        return value

    def wait_past(self, instant: datetime, *, limit: float = 8.0) -> None:
        """Until the clock has passed ``instant`` (at most ``limit`` seconds)."""
        give_up = time.monotonic() + limit
        while self.now() <= instant and time.monotonic() < give_up:
            time.sleep(0.02)

    def close(self) -> None:
        if self._conn is not None:
            self._runner.run(self._conn.close())
        self._runner.close()


@contextmanager
def reference(database_url: str) -> Iterator[Reference]:
    clock = Reference(database_url)
    try:
        yield clock
    finally:
        clock.close()


# -- the scenario ---------------------------------------------------------------------------

EXPECTED: dict[str, Any] = {
    "incident opened at the clock's time": True,
    "request created at the clock's time": True,
    "ttl counted from creation": True,
    "read before the deadline": "pending",
    "listed as pending before the deadline": True,
    "a deadline 3 s ahead": 201,
    "a deadline 1 s ago": 422,
    "a deadline just inside the maximum TTL": 201,
    "a deadline just past the maximum TTL": 422,
    "approve": (200, "approved", True, True),
    "reject": (200, "rejected", True, True),
    "cancel": (200, "cancelled", True, True),
    "a decision after the deadline": (409, "expired"),
    "read after the deadline": "expired",
    "expired by the resolver within a second of its deadline": True,
    "expired at or after its deadline": True,
    "its incident closed as a timeout in the same instant": ("resolved", "timeout", True),
    "statistics": {"auto_repair": 0, "human_approved": 1, "human_rejected": 1,
                   "timeout_ignored": 2, "cancelled": 1},
}


def _at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _within(instant: datetime, start: datetime, end: datetime) -> bool:
    """``instant`` lies between ``start`` and ``end``, give or take the clock's error."""
    return start - CLOCK_ERROR <= instant <= end + CLOCK_ERROR


def scenario(server: Server, clock: Reference) -> dict[str, Any]:
    """Create, decide, read and let expire, noting each outcome against ``clock``."""
    bot, alice, bob = server.client("bot"), server.client("alice"), server.client("bob")
    viewer = server.client("viewer")
    seen: dict[str, Any] = {}

    t0 = clock.now()
    incident = bot.post("/incidents", json={"title": "disk full", "severity": "high"}).json()
    t1 = clock.now()
    opened = _at(incident["opened_at"])
    assert opened is not None
    seen["incident opened at the clock's time"] = _within(opened, t0, t1)

    short = bot.post("/approvals", json={"incident_id": incident["id"], "action": "restart",
                                         "ttl_seconds": 2}).json()
    t2 = clock.now()
    created, deadline = _at(short["created_at"]), _at(short["expires_at"])
    assert created is not None and deadline is not None
    seen["request created at the clock's time"] = _within(created, t1, t2)
    seen["ttl counted from creation"] = deadline - created == timedelta(seconds=2)
    seen["read before the deadline"] = viewer.get(f"/approvals/{short['id']}").json()["status"]
    listed = viewer.get("/approvals", params={"status": "pending"}).json()["items"]
    seen["listed as pending before the deadline"] = short["id"] in {r["id"] for r in listed}

    def create_due_in(offset: timedelta) -> httpx.Response:
        until = (clock.now() + offset).isoformat()
        return bot.post("/approvals", json={"action": "restart", "expires_at": until})

    soon = create_due_in(timedelta(seconds=3))
    seen["a deadline 3 s ahead"] = soon.status_code
    seen["a deadline 1 s ago"] = create_due_in(timedelta(seconds=-1)).status_code
    seen["a deadline just inside the maximum TTL"] = create_due_in(
        MAX_TTL - timedelta(minutes=1)).status_code
    seen["a deadline just past the maximum TTL"] = create_due_in(
        MAX_TTL + timedelta(minutes=1)).status_code

    for verb, client in (("approve", alice), ("reject", bob), ("cancel", bot)):
        rid = bot.post("/approvals", json={"action": verb, "ttl_seconds": 600}).json()["id"]
        before = clock.now()
        answer = client.post(f"/approvals/{rid}/{verb}")
        after = clock.now()
        body = answer.json()
        decided = _at(body.get("decided_at"))
        on_clock = decided is not None and _within(decided, before, after)
        trail = [e["at"] for e in viewer.get(f"/approvals/{rid}/events").json()["items"]]
        seen[verb] = (answer.status_code, body.get("status"), on_clock,
                      trail == [body.get("created_at"), body.get("decided_at")])

    clock.wait_past(deadline)
    late = alice.post(f"/approvals/{short['id']}/approve")
    seen["a decision after the deadline"] = (late.status_code,
                                             late.json().get("error", {}).get("status"))
    after_deadline = viewer.get(f"/approvals/{short['id']}").json()
    seen["read after the deadline"] = after_deadline["status"]

    on_time = False
    if soon.status_code == 201:
        soon_deadline = _at(soon.json()["expires_at"])
        assert soon_deadline is not None
        clock.wait_past(soon_deadline + timedelta(seconds=1.5))
        row = viewer.get(f"/approvals/{soon.json()['id']}").json()
        decided = _at(row["decided_at"])
        on_time = (
            row["status"] == "expired" and row["decided_by"] == "timeout"
            and decided is not None
            and timedelta(0) <= decided - soon_deadline < timedelta(seconds=1)
        )
    seen["expired by the resolver within a second of its deadline"] = on_time

    short_row = viewer.get(f"/approvals/{short['id']}").json()
    short_decided = _at(short_row["decided_at"])
    seen["expired at or after its deadline"] = (
        short_row["status"] == "expired" and short_decided is not None
        and short_decided >= deadline
    )
    closed = viewer.get(f"/incidents/{incident['id']}").json()
    seen["its incident closed as a timeout in the same instant"] = (
        closed["status"], closed["resolution_type"],
        closed["resolved_at"] is not None and closed["resolved_at"] == short_row["decided_at"],
    )
    seen["statistics"] = viewer.get(
        "/stats", params={"since": t0.isoformat()}).json()["dispositions"]
    return seen


def _process_clock(server: Server) -> datetime:
    """The server's wall clock, as its ``Date`` header shows it."""
    return parsedate_to_datetime(httpx.get(server.url + "/healthz", timeout=5).headers["date"])


LAUNCHERS = [
    "patched",
    pytest.param("faketime", marks=pytest.mark.skipif(
        LIBFAKETIME is None, reason="libfaketime is not installed (apt-get install faketime)")),
]


@pytest.fixture
def clean_postgres(postgres_url: str) -> str:
    asyncio.run(_truncate(postgres_url))
    return postgres_url


@pytest.mark.postgres
@pytest.mark.parametrize("skew", [HOUR, -HOUR], ids=["ahead", "behind"])
@pytest.mark.parametrize("how", LAUNCHERS)
def test_a_skewed_process_clock_changes_no_outcome_on_postgres(
    clean_postgres: str, tmp_path: Path, how: str, skew: float
) -> None:
    with reference(clean_postgres) as clock, skewed_server(
        clean_postgres, tmp_path, how, skew
    ) as server:
        # The skew took: the process's own clock is an hour off the database's.
        off = (_process_clock(server) - clock.now()).total_seconds()
        assert abs(off - skew) < 5, off
        assert scenario(server, clock) == EXPECTED


def test_on_sqlite_the_process_clock_is_the_clock_so_a_skew_shows(tmp_path: Path) -> None:
    """The scenario notices a leaking clock: on SQLite the process clock is the only one."""
    url = f"sqlite:///{tmp_path}/signoff.db"
    with reference(url) as clock, skewed_server(url, tmp_path, "patched", -HOUR) as server:
        seen = scenario(server, clock)
    assert seen["request created at the clock's time"] is False
    assert seen["a deadline 3 s ahead"] == 422  # an hour and 3 s ahead of its clock: too far
    assert seen != EXPECTED


# -- naive datetimes at every boundary ----------------------------------------------------


@pytest.fixture
async def api(db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    """The app in process (no resolver), with a requester's token."""
    app = create_app(Settings(database_url="sqlite://"), db=db, run_resolver=False)
    secret = await db.run(lambda c, n: store.create_token(c, n, "bot", Role.REQUESTER))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://signoff/api/v1",
        headers={"Authorization": f"Bearer {secret}"},
    ) as client:
        yield client, db


async def _count(db: Database, table: str) -> int:
    async def read(conn: Any, _now: datetime) -> int:
        return int((await conn.execute(
            sa.select(sa.func.count()).select_from(metadata.tables[table]))).scalar_one())

    return await db.run(read, readonly=True)


def _cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


async def test_naive_times_in_bodies_queries_and_cursors_are_refused(
    api: tuple[httpx.AsyncClient, Database],
) -> None:
    client, db = api
    naive = (datetime.now(UTC) + timedelta(minutes=5)).replace(tzinfo=None).isoformat()
    answer = await client.post("/approvals", json={"action": "a", "expires_at": naive})
    assert answer.status_code == 422 and "timezone" in answer.text, answer.text
    for name in ("since", "until"):
        answer = await client.get("/stats", params={name: "2026-01-01T00:00:00"})
        assert answer.status_code == 422 and "offset" in answer.text, answer.text
    some_id = str(uuid.uuid4())
    for path in ("/approvals", "/incidents", "/knowledge"):
        answer = await client.get(path, params={"cursor": _cursor("2026-01-01T00:00:00", some_id)})
        assert answer.status_code == 422, (path, answer.text)
        aware = _cursor("2026-01-01T00:00:00+00:00", some_id)  # the same, with its offset
        assert (await client.get(path, params={"cursor": aware})).status_code == 200
    assert await _count(db, "approval_requests") == 0


async def test_times_sent_with_any_offset_come_back_in_utc_to_the_microsecond(
    api: tuple[httpx.AsyncClient, Database],
) -> None:
    client, _ = api
    taipei = timezone(timedelta(hours=8))
    local = (datetime.now(UTC) + timedelta(minutes=5)).astimezone(taipei).replace(
        microsecond=123_457)
    made = (await client.post("/approvals", json={
        "action": "a", "expires_at": local.isoformat()})).json()
    assert made["expires_at"] == local.astimezone(UTC).isoformat()
    assert made["expires_at"].endswith(".123457+00:00")
    again = (await client.get(f"/approvals/{made['id']}")).json()
    assert again["expires_at"] == made["expires_at"]
    assert again["created_at"].endswith("+00:00")


async def test_store_functions_and_columns_refuse_a_naive_now(db: Database) -> None:
    incident = await new_incident(db)
    request = await new_request(db, ttl=600)
    naive = datetime(2030, 1, 1, 12)
    calls: dict[str, Callable[[Any], Any]] = {
        "create_incident": lambda c: store.create_incident(
            c, naive, actor="bot", data={"title": "t", "severity": "low"}),
        "create_request": lambda c: store.create_request(
            c, datetime.now(UTC), actor="bot", data={"action": "a"}, expires_at=naive),
        "approve_request": lambda c: store.approve_request(c, naive, request["id"], actor="al"),
        "reject_request": lambda c: store.reject_request(c, naive, request["id"], actor="al"),
        "cancel_request": lambda c: store.cancel_request(c, naive, request["id"], actor="bot"),
        "resolve_incident": lambda c: store.resolve_incident(
            c, naive, incident["id"], actor="al"),
        "expire_due_requests": lambda c: store.expire_due_requests(c, naive, limit=10),
        "create_token": lambda c: store.create_token(c, naive, "x", Role.VIEWER),
    }
    counts = {t: await _count(db, t) for t in metadata.tables}
    for name, call in calls.items():
        with pytest.raises(Exception, match="naive datetime refused"):
            async with db.begin() as conn:
                await call(conn)
        assert {t: await _count(db, t) for t in metadata.tables} == counts, name


async def test_a_clock_that_gives_naive_times_is_refused(db_url: str) -> None:
    db = Database.from_settings(Settings(database_url=db_url), clock=lambda: datetime(2026, 1, 1))
    try:
        with pytest.raises(ValueError, match="naive datetime refused"):
            await db.run(lambda _c, now: asyncio.sleep(0, now))
    finally:
        await db.dispose()


def test_a_naive_notify_payload_asks_for_a_full_look_not_an_instant() -> None:
    heard: list[datetime | None] = []
    listener = deadline_listener("postgresql://127.0.0.1/unused", heard.append)
    for payload in ("2026-01-01T12:00:00.000001+08:00", "2026-01-01T12:00:00", "soon"):
        listener.on_notify(payload)
    taipei = timezone(timedelta(hours=8))
    assert heard == [datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=taipei), None, None]


# -- SQLite's text instants -----------------------------------------------------------------

OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                            max_value=timedelta(hours=23, minutes=59)))
INSTANTS = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                        timezones=OFFSETS)


def test_sqlite_round_trips_keep_microseconds_and_utc_and_text_order_is_time_order() -> None:
    engine = sa.create_engine("sqlite://")
    table = sa.Table("instants", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("at", UTCDateTime(), nullable=False))
    table.create(engine)

    @settings(max_examples=300, deadline=None, database=None)
    @given(a=INSTANTS, b=INSTANTS)
    def check(a: datetime, b: datetime) -> None:
        with engine.begin() as conn:
            conn.execute(table.delete())
            conn.execute(table.insert(), [{"id": 1, "at": a}, {"id": 2, "at": b}])
            back = {i: at for i, at in conn.execute(sa.select(table.c.id, table.c.at))}
            for key, sent in ((1, a), (2, b)):
                assert back[key] == sent and back[key].tzinfo is UTC
                assert back[key].microsecond == sent.astimezone(UTC).microsecond
            raw = conn.exec_driver_sql("SELECT at FROM instants WHERE id = 1").scalar_one()
            assert raw == a.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            by_text = conn.execute(sa.select(table.c.id).order_by(table.c.at, table.c.id))
            assert by_text.scalars().all() == sorted([1, 2], key=lambda i: (back[i], i))
            before_b = conn.execute(sa.select(table.c.id).where(
                table.c.at < sa.bindparam("t", b, type_=UTCDateTime())).order_by(table.c.id))
            assert before_b.scalars().all() == [i for i, v in ((1, a), (2, b)) if v < b]
            earliest = conn.execute(sa.select(sa.func.min(table.c.at))).scalar_one()
            assert earliest == min(a, b) and earliest.tzinfo is UTC

    try:
        check()
    finally:
        engine.dispose()

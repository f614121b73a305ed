"""Helpers of the fuzz suites: full snapshots of the database, and rows in every state."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import asyncpg

from signoff.settings import normalise_database_url
from signoff.tables import metadata
from tests.acceptance.conftest import Server

Snapshot = dict[str, dict[tuple[Any, ...], dict[str, Any]]]


class Snapshots:
    """Every row of every table, keyed by primary key, read straight from the database."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.postgres = database_url.startswith("postgres")
        self.keys = {t.name: [c.name for c in t.primary_key.columns]
                     for t in metadata.sorted_tables}
        self._runner: asyncio.Runner | None = None
        self._pg: Any = None
        self._lite: sqlite3.Connection | None = None

    def __enter__(self) -> Snapshots:
        if self.postgres:
            self._runner = asyncio.Runner()
            dsn = "postgresql://" + normalise_database_url(self.url).split("://", 1)[1]
            self._pg = self._runner.run(asyncpg.connect(dsn))
        else:
            path = self.url.split(":///", 1)[1]
            self._lite = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            self._lite.row_factory = sqlite3.Row
        return self

    def __exit__(self, *_: object) -> None:
        if self._runner is not None:
            self._runner.run(self._pg.close())
            self._runner.close()
        if self._lite is not None:
            self._lite.close()

    def take(self) -> Snapshot:
        if self._runner is not None:
            return self._runner.run(self._take_postgres())
        assert self._lite is not None
        self._lite.execute("BEGIN")  # one read transaction: a consistent picture
        try:
            return {
                table: self._keyed(table, [dict(r) for r in self._lite.execute(
                    f"SELECT * FROM {table}")])
                for table in self.keys
            }
        finally:
            self._lite.execute("COMMIT")

    async def _take_postgres(self) -> Snapshot:
        async with self._pg.transaction(isolation="repeatable_read", readonly=True):
            return {
                table: self._keyed(table, [dict(r) for r in await self._pg.fetch(
                    f"SELECT * FROM {table}")])
                for table in self.keys
            }

    def _keyed(self, table: str, rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], Any]:
        return {tuple(str(row[k]) for k in self.keys[table]): row for row in rows}


def _resolver_did(table: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Whether one row's change is the resolver's own work: an overdue request expired, its
    incident closed as a timeout, their knowledge entry and audit events."""
    if table == "approval_requests" and old is not None and new is not None:
        same = {k: v for k, v in old.items()
                if k not in ("status", "disposition", "decided_by", "decided_at")}
        return (
            old["status"] == "pending" and new["status"] == "expired"
            and new["decided_by"] == "timeout" and new["disposition"] == "timeout_ignored"
            and new["decided_at"] >= new["expires_at"]
            and all(new[k] == v for k, v in same.items())
        )
    if table == "incidents" and old is not None and new is not None:
        same = {k: v for k, v in old.items() if k not in (
            "status", "resolved_at", "resolution_type", "disposition", "resolved_by")}
        return (
            old["status"] == "open" and new["status"] == "resolved"
            and new["resolved_by"] == "timeout" and new["resolution_type"] == "timeout"
            and all(new[k] == v for k, v in same.items())
        )
    if table == "events" and old is None and new is not None:
        return bool(new["actor"] == "timeout")
    if table == "knowledge_entries" and old is None and new is not None:
        return bool(new["resolution_type"] == "timeout")
    if table == "tokens" and old is not None and new is not None:  # a token's use, noted
        return all(new[k] == v for k, v in old.items() if k != "last_used_at")
    return False


def unexplained_changes(before: Snapshot, after: Snapshot) -> list[str]:
    """Every row that changed between two snapshots, except the resolver's own work."""
    found = []
    for table, rows in after.items():
        old_rows = before[table]
        for key in old_rows.keys() | rows.keys():
            old, new = old_rows.get(key), rows.get(key)
            if old != new and not _resolver_did(table, old, new):
                found.append(f"{table} {key}: {old} -> {new}")
    return found


class Seeded:
    """Ids of rows in every state, and a valid cursor, for the fuzzer to aim at."""

    def __init__(self) -> None:
        self.incidents: list[str] = []
        self.requests: list[str] = []
        self.cursors: list[str] = []


def seed(server: Server) -> Seeded:
    """Incidents open and resolved; requests pending (one needing two approvals),
    approved (with and without an outcome), rejected, cancelled and expired."""
    bot, bot2, alice, bob = (server.client(n) for n in ("bot", "bot2", "alice", "bob"))
    made = Seeded()

    def ok(response: Any) -> dict[str, Any]:
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    open_ = ok(bot.post("/incidents", json={"title": "disk full", "severity": "high",
                                             "service": "db", "fingerprint": "fuzz-disk"}))
    done = ok(bot.post("/incidents", json={"title": "cpu", "severity": "low"}))
    ok(alice.post(f"/incidents/{done['id']}/resolve", json={"note": "fixed by hand"}))
    made.incidents += [open_["id"], done["id"]]

    def request(by: Any = bot, **body: Any) -> str:
        return str(ok(by.post("/approvals", json={"action": "restart", **body}))["id"])

    pending = request(incident_id=open_["id"], ttl_seconds=3600)
    quorum = request(by=bot2, ttl_seconds=3600, required_approvals=2)
    ok(alice.post(f"/approvals/{quorum}/approve", json={}))
    approved = request(ttl_seconds=3600)
    ok(alice.post(f"/approvals/{approved}/approve", json={"comment": "go"}))
    reported = request(incident_id=open_["id"], ttl_seconds=3600)
    ok(bob.post(f"/approvals/{reported}/approve"))
    ok(bot.post(f"/approvals/{reported}/outcome", json={"succeeded": False, "detail": "no"}))
    rejected = request(ttl_seconds=3600)
    ok(bob.post(f"/approvals/{rejected}/reject", json={"comment": "no"}))
    cancelled = request(by=bot2, ttl_seconds=3600)
    ok(bot2.post(f"/approvals/{cancelled}/cancel"))
    expired = request(ttl_seconds=1)
    made.requests += [pending, quorum, approved, reported, rejected, cancelled, expired]
    deadline = time.monotonic() + 20
    while bot.get(f"/approvals/{expired}").json()["decided_at"] is None:
        assert time.monotonic() < deadline, "the resolver did not expire the seed request"
        time.sleep(0.2)
    for path in ("/approvals", "/incidents", f"/approvals/{reported}/events"):
        cursor = ok(bot.get(path, params={"limit": 1}))["next_cursor"]
        assert cursor is not None
        made.cursors.append(cursor)
    return made

"""Tokens listed and revoked: ``signoff token list|revoke`` on the database and
``GET /api/v1/tokens``; a revoked token answered 401 at once, on every server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from signoff.db import Database
from signoff.settings import Settings
from signoff.tables import events
from tests.acceptance.conftest import Server, run_signoff, start_server


def refused_within(client: httpx.Client, seconds: float) -> float:
    """How long until ``client``'s token is refused (401); fails after ``seconds``."""
    started = time.monotonic()
    while True:
        answer = client.get("/approvals")
        if answer.status_code == 401:
            return time.monotonic() - started
        assert answer.status_code == 200, answer.text
        if time.monotonic() - started > seconds:
            raise AssertionError(f"still accepted {seconds} s after the revocation")
        time.sleep(0.01)


def test_a_revoked_token_is_refused_at_once_and_listed_revoked(server: Server) -> None:
    bot = server.client("bot")
    assert bot.get("/approvals").status_code == 200  # remembered now, on PostgreSQL
    assert bot.post("/approvals", json={"action": "restart"}).status_code == 201

    done = run_signoff(server.env, "token", "revoke", "bot")
    assert done.returncode == 0, done.stderr
    assert "revoked 1 token of bot" in done.stderr
    # A server on PostgreSQL forgets at the NOTIFY, delivered at the commit: no more than
    # the listener's own latency. On SQLite every call looks its token up.
    assert refused_within(bot, 2.0) < 1.0
    answer = bot.get("/approvals")
    assert answer.json()["error"]["code"] == "unauthenticated"
    assert server.client("bot2").get("/approvals").status_code == 200  # others unchanged

    listed = run_signoff(server.env, "token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = {t["name"]: t for t in json.loads(listed.stdout)["items"]}
    assert items["bot"]["revoked"] is True and items["bot"]["revoked_at"] is not None
    assert items["bot"]["last_used_at"] is not None  # it was used, before
    assert items["carol"]["last_used_at"] is None and items["carol"]["revoked"] is False
    assert "so_" not in listed.stdout and "hash" not in listed.stdout

    again = run_signoff(server.env, "token", "revoke", "bot")  # nothing live left
    assert again.returncode == 2 and "no live token is named 'bot'" in again.stderr

    table = run_signoff(server.env, "token", "list")
    assert table.returncode == 0 and "bot" in table.stdout and "never" in table.stdout


def test_the_token_list_is_for_admins(server: Server) -> None:
    assert server.client("viewer").get("/tokens").status_code == 403
    assert server.client().get("/tokens").status_code == 401
    answer = server.client("root").get("/tokens")
    assert answer.status_code == 200
    items = answer.json()["items"]
    assert {t["name"] for t in items} >= {"bot", "alice", "root"}
    assert set(items[0]) == {"name", "role", "created_at", "last_used_at", "revoked_at",
                             "revoked"}
    root = next(t for t in items if t["name"] == "root")
    assert root["last_used_at"] is not None and root["role"] == "admin"
    assert "so_" not in answer.text


async def _revocations(database_url: str) -> list[dict[str, Any]]:
    db = Database.from_settings(Settings(database_url=database_url))
    try:
        async with db.begin() as conn:
            query = sa.select(events).where(events.c.kind == "token_revoked")
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]
    finally:
        await db.dispose()


def test_revoking_is_audited(server: Server) -> None:
    done = run_signoff(server.env, "token", "revoke", "alice")
    assert done.returncode == 0, done.stderr
    (event,) = asyncio.run(_revocations(server.env["SIGNOFF_DATABASE_URL"]))
    assert event["actor"].startswith("cli:")
    assert event["detail"] == {"name": "alice", "tokens": 1, "roles": ["approver"]}


@pytest.mark.postgres
def test_a_revocation_reaches_every_replica_at_once(
    db_url_postgres: str, tmp_path: Path
) -> None:
    first = start_server(db_url_postgres, tmp_path / "a.log")
    second = start_server(db_url_postgres, tmp_path / "b.log")
    second.tokens.update(first.tokens)
    try:
        on_first, on_second = first.client("alice"), second.client("alice")
        assert on_first.get("/approvals").status_code == 200  # both remember alice now
        assert on_second.get("/approvals").status_code == 200
        done = run_signoff(first.env, "token", "revoke", "alice")
        assert done.returncode == 0, done.stderr
        assert refused_within(on_second, 2.0) < 1.0
        assert refused_within(on_first, 2.0) < 1.0
    finally:
        second.stop()
        first.stop()

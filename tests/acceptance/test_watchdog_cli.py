"""Watchdogs from the real ``signoff`` command: ``serve`` runs them on a schedule and
exports a gauge per check, ``signoff watchdog`` exits 1 while anything is found."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from signoff import store
from signoff.db import Database
from signoff.migrate import upgrade
from signoff.settings import Settings
from tests.acceptance.conftest import Server, run_signoff, start_server
from tests.integration.notify_support import Answer, FakeBotApi, serving

TOKEN = "42:watchdog"


@pytest.fixture
def bot() -> Iterator[FakeBotApi]:
    with serving(FakeBotApi(TOKEN)) as fake:
        yield fake  # type: ignore[misc]


def _gauge(server: Server, check: str) -> float | None:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    found = re.search(rf'^signoff_watchdog_findings{{check="{check}",[^}}]*}} (\S+)$', text,
                      re.MULTILINE)
    return None if found is None else float(found.group(1))


def _wait_for_gauge(server: Server, check: str, value: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (seen := _gauge(server, check)) != value:
        assert time.monotonic() < deadline, f"{check} stayed at {seen}, not {value}"
        time.sleep(0.2)


def test_serve_watches_undelivered_cards_until_telegram_recovers(
    database_url: str, tmp_path: Path, bot: FakeBotApi
) -> None:
    bot.down = Answer(500, {"ok": False, "error_code": 500, "description": "down"})
    server = start_server(
        database_url, tmp_path / "serve.log",
        SIGNOFF_TELEGRAM_BOT_TOKEN=TOKEN, SIGNOFF_TELEGRAM_CHAT_ID="-42",
        SIGNOFF_TELEGRAM_API_BASE=bot.url, SIGNOFF_WATCHDOG_NOTIFY_GRACE="1",
        SIGNOFF_WATCHDOG_INTERVAL="0.5s",
    )
    try:
        created = server.client("bot").post("/approvals", json={"action": "restart"})
        request_id = created.json()["id"]
        _wait_for_gauge(server, "W-2", 1.0)
        done = run_signoff(server.env, "watchdog", "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        checks = {c["id"]: c for c in json.loads(done.stdout)["checks"]}
        assert [f["request_id"] for f in checks["W-2"]["findings"]] == [request_id]
        assert "last error" in checks["W-2"]["findings"][0]["detail"]

        bot.down = None  # the next retry delivers the card; the finding clears itself
        _wait_for_gauge(server, "W-2", 0.0)
        cards = [m for m in bot.messages.values() if request_id in m["text"]]
        assert len(cards) == 1
        done = run_signoff(server.env, "watchdog")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "W-2" in done.stdout
        assert "watchdog_findings" in server.log_path.read_text()
    finally:
        server.stop()


def test_watchdog_exits_1_and_lists_what_it_found(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/stalled.db"

    async def stalled() -> str:
        db = Database.from_settings(Settings(database_url=url))
        try:
            await upgrade(db)
            # A request ten minutes overdue, as if no resolver had run.
            row, _ = await db.run(lambda c, now: store.create_request(
                c, now - timedelta(minutes=20), actor="bot", data={"action": "restart db"},
                expires_at=now - timedelta(minutes=10),
            ))
            return str(row["id"])
        finally:
            await db.dispose()

    env = {**os.environ, "SIGNOFF_DATABASE_URL": url}
    healthy = run_signoff(env, "db", "upgrade")
    assert healthy.returncode == 0
    assert run_signoff(env, "watchdog").returncode == 0
    request_id = asyncio.run(stalled())
    done = run_signoff({**env, "COLUMNS": "200"}, "watchdog")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"W-1 request_id {request_id}: still pending 10m" in done.stdout
    assert "is any resolver running?" in done.stdout

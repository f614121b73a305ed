"""``signoff doctor`` as operators run it: exit 0 when healthy, 1 listing each violation."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path

from signoff import store
from signoff.db import Database
from signoff.migrate import upgrade
from signoff.settings import Settings
from tests.acceptance.conftest import Server, run_signoff


def test_doctor_passes_after_real_traffic(server: Server) -> None:
    bot = server.client("bot")
    rid = bot.post("/approvals", json={"action": "a", "ttl_seconds": 60}).json()["id"]
    assert server.client("alice").post(f"/approvals/{rid}/approve").status_code == 200
    done = run_signoff(server.env, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "overdue_pending" in done.stdout


def test_doctor_exits_1_and_names_the_violation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/stale.db"

    async def stale() -> str:
        db = Database.from_settings(Settings(database_url=url))
        try:
            await upgrade(db)
            # A request two minutes overdue, as if no resolver had run.
            row, _ = await db.run(
                lambda c, now: store.create_request(
                    c,
                    now - timedelta(minutes=10),
                    actor="bot",
                    data={"action": "a"},
                    expires_at=now - timedelta(minutes=2),
                )
            )
            return str(row["id"])
        finally:
            await db.dispose()

    rid = asyncio.run(stale())
    env = {**os.environ, "SIGNOFF_DATABASE_URL": url}
    done = run_signoff(env, "doctor", "--json")
    assert done.returncode == 1
    report = {c["check"]: c for c in json.loads(done.stdout)}
    assert report["overdue_pending"]["violations"] == 1
    assert report["overdue_pending"]["samples"][0]["request_id"] == rid
    assert all(c["violations"] == 0 for name, c in report.items() if name != "overdue_pending")

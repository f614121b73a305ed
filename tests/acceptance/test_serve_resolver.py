"""``signoff serve``'s resolver: on time, woken by each create, and measured."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from tests.acceptance.conftest import start_server


def log_events(path: Path) -> list[dict[str, object]]:
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_requests_expire_on_time_woken_by_their_create(
    database_url: str, tmp_path: Path
) -> None:
    # A backstop of a minute: only the wake-up of each create can bring a pass on time
    # (in process on SQLite, by NOTIFY too on PostgreSQL).
    log = tmp_path / "serve.log"
    server = start_server(database_url, log, SIGNOFF_RESOLVER_BACKSTOP="60s")
    try:
        bot, viewer = server.client("bot"), server.client("viewer")
        ids = []
        for ttl in (1, 2):
            created = bot.post("/approvals", json={"action": "restart", "ttl_seconds": ttl})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        deadline = time.monotonic() + 10
        done: dict[str, dict[str, str]] = {}
        while len(done) < len(ids) and time.monotonic() < deadline:
            for request_id in ids:
                body = viewer.get(f"/approvals/{request_id}").json()
                if body["decided_at"]:
                    done[request_id] = body
            time.sleep(0.05)
        assert len(done) == len(ids), "the resolver did not expire every request"
        for body in done.values():
            late = (datetime.fromisoformat(body["decided_at"])
                    - datetime.fromisoformat(body["expires_at"])).total_seconds()
            assert body["status"] == "expired" and 0 <= late < 0.25, body
        metrics = server.client().get(server.url + "/metrics").text
        assert 'signoff_resolver_wake_lag_seconds_count{stage="timer"}' in metrics
    finally:
        server.stop()
    events = [e.get("event") for e in log_events(log)]
    assert "resolver_started" in events and "resolver_error" not in events

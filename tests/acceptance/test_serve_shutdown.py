"""``signoff serve`` stopped by SIGTERM or SIGINT shuts down cleanly: each background task
stops on its own, nothing is logged at error level, and the exit code is 0."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import start_server


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_serve_cleanly_with_exit_0(
    sig: signal.Signals, database_url: str, tmp_path: Path
) -> None:
    server = start_server(database_url, tmp_path / "serve.log")
    try:
        bot = server.client("bot")
        assert bot.post("/approvals", json={"action": "a", "ttl_seconds": 1}).status_code == 201
        server.process.send_signal(sig)
        code = server.process.wait(20)
    finally:
        server.stop()
    log = server.log_path.read_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert [r for r in records if r["level"] in ("error", "critical")] == [], log
    assert "Traceback" not in log
    events = {r["event"] for r in records}
    assert {"resolver_stopped", "notify_stopped", "Application shutdown complete."} <= events
    assert code == 0, log


def test_a_second_sigint_forces_the_exit_with_130(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path}/signoff.db", tmp_path / "serve.log")
    try:
        # A call whose body never arrives: the graceful shutdown waits for it.
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as s:
            s.sendall(b"POST /api/v1/approvals HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + server.tokens["bot"].encode() + b"\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.3)
            server.process.send_signal(signal.SIGINT)
            time.sleep(1.0)
            assert server.process.poll() is None, server.log_path.read_text()  # still waiting
            server.process.send_signal(signal.SIGINT)
            code = server.process.wait(20)
    finally:
        server.stop()
    assert code == 130, server.log_path.read_text()

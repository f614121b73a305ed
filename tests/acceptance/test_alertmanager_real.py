"""The real Alertmanager (Debian's ``prometheus-alertmanager``) with the sample receiver
config, pushing to a real ``signoff serve``: alerts open incidents, and once resolved in
Alertmanager they are resolved in signoff as ``alert_resolved``.

Skipped without the binary, unless ``SIGNOFF_REQUIRE_ALERTMANAGER=1`` (as in CI), where
it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.acceptance.conftest import free_port, start_server

SAMPLE = Path(__file__).parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
REQUIRE = os.environ.get("SIGNOFF_REQUIRE_ALERTMANAGER") == "1"


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        if REQUIRE:
            pytest.fail("SIGNOFF_REQUIRE_ALERTMANAGER=1 but no alertmanager binary is installed")
        pytest.skip("no alertmanager binary (apt-get install prometheus-alertmanager)")
    return found


def until(what: str, check: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_alerts_from_the_real_alertmanager_open_and_resolve_incidents(tmp_path: Path) -> None:
    binary = alertmanager_binary()
    server = start_server(f"sqlite:///{tmp_path}/signoff.db", tmp_path / "serve.log")
    am: subprocess.Popen[bytes] | None = None
    try:
        server.token("alertmanager", "requester")
        token_file = tmp_path / "signoff-token"
        token_file.write_text(server.tokens["alertmanager"] + "\n")
        config = yaml.safe_load(SAMPLE.read_text())
        # The sample, pointed at this server, with short waits so that the test is quick.
        config["route"].update(group_wait="0s", group_interval="1s")
        hook = config["receivers"][0]["webhook_configs"][0]
        hook["url"] = server.url + "/api/v1/alertmanager"
        hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        config_path = tmp_path / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        with (tmp_path / "am.log").open("wb") as log:
            am = subprocess.Popen(
                [binary, f"--config.file={config_path}", f"--storage.path={tmp_path}/am",
                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                 "--log.level=debug"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        api = f"http://127.0.0.1:{port}/api/v2"

        def ready() -> bool:
            assert am is not None and am.poll() is None, (tmp_path / "am.log").read_text()
            try:
                return httpx.get(api + "/status", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        until("alertmanager to start", ready)
        now = datetime.now(UTC)
        alerts = [{"labels": {"alertname": "WebDown", "service": "web", "severity": "critical",
                              "instance": f"web-{n}"},
                   "annotations": {"summary": f"web-{n} is down"},
                   "startsAt": now.isoformat()} for n in range(2)]
        assert httpx.post(api + "/alerts", json=alerts, timeout=5).status_code == 200
        viewer = server.client("viewer")

        def opened() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = viewer.get("/incidents").json()["items"]
            return items if len(items) == 2 else []

        incidents = until("two incidents in signoff", opened)
        assert {i["title"] for i in incidents} == {"web-0 is down", "web-1 is down"}
        assert all(i["source"] == "alertmanager" and i["severity"] == "critical"
                   and i["service"] == "web" for i in incidents)
        request = server.client("bot").post(
            "/approvals", json={"action": "restart pod web-0",
                                "fingerprint": incidents[0]["fingerprint"]})
        assert request.status_code == 201, request.text

        ended = [{**a, "endsAt": (now + timedelta(seconds=1)).isoformat()} for a in alerts]
        time.sleep(1)  # endsAt in the past when Alertmanager reads it: resolved at once
        assert httpx.post(api + "/alerts", json=ended, timeout=5).status_code == 200

        def resolved() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = viewer.get(
                "/incidents", params={"status": "resolved"}).json()["items"]
            return items if len(items) == 2 else []

        closed = until("both incidents resolved in signoff", resolved)
        assert {i["resolution_type"] for i in closed} == {"alert_resolved"}
        cancelled = viewer.get(f"/approvals/{request.json()['id']}").json()
        assert (cancelled["status"], cancelled["decided_by"]) == ("cancelled",
                                                                  "incident_resolved")
    finally:
        if am is not None and am.poll() is None:
            am.terminate()
            try:
                am.wait(10)
            except subprocess.TimeoutExpired:
                am.kill()
                am.wait(10)
        server.stop()

"""``signoff serve --demo``: on an empty database, tokens printed, requests ending from
20 s to 3 min, a console to open; on any other database, exit 2 and nothing changed."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.acceptance.conftest import free_port, run_signoff, signoff_command


def _env(database_url: str, port: int) -> dict[str, str]:
    return {**os.environ, "SIGNOFF_DATABASE_URL": database_url, "SIGNOFF_PORT": str(port),
            "SIGNOFF_HOST": "127.0.0.1", "SIGNOFF_LOG_FORMAT": "json"}


def test_the_demo_fills_an_empty_database_and_keeps_serving(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    out = tmp_path / "out.txt"
    with out.open("wb") as sink, (tmp_path / "err.txt").open("wb") as err:
        process = subprocess.Popen(signoff_command("serve", "--demo"), env=_env(
            database_url, port), stdout=sink, stderr=err, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "Open http" not in out.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "err.txt").read_text()
            time.sleep(0.1)
        text = out.read_text()
        assert f"Open http://127.0.0.1:{port}/ui/" in text
        tokens = {line.split()[0]: line.split()[1] for line in text.splitlines()
                  if line.startswith("  ")}
        assert set(tokens) >= {"alice", "bob", "remediator"}
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {tokens['alice']}"}
        found = httpx.get(f"http://127.0.0.1:{port}/api/v1/approvals?status=pending",
                          headers=auth, timeout=10).json()["items"]
        assert len(found) >= 5
        left = sorted(time.mktime(time.strptime(r["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
                      - time.mktime(time.strptime(r["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
                      for r in found)
        assert left[0] <= 20 and 150 <= left[-1] <= 180
        page = httpx.get(f"http://127.0.0.1:{port}/", follow_redirects=True, timeout=10)
        assert page.status_code == 200 and "Token" in page.text
    finally:
        process.terminate()
        process.wait(20)
    assert process.returncode == 0


def test_the_demo_refuses_a_database_that_is_not_empty(
    database_url: str, tmp_path: Path
) -> None:
    env = _env(database_url, free_port())
    assert run_signoff(env, "db", "upgrade").returncode == 0
    made = run_signoff(env, "token", "create", "ops", "--role", "admin")
    assert made.returncode == 0, made.stderr
    before = run_signoff(env, "token", "list", "--json").stdout
    done = run_signoff(env, "serve", "--demo", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "empty database" in done.stderr and "nothing was changed" in done.stderr
    assert run_signoff(env, "token", "list", "--json").stdout == before
    assert "so_" not in done.stdout

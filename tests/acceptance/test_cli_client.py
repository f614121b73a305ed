"""The client commands (``signoff request ...``, ``approve``, ``reject``, ``incident
create``) run as subprocesses against a real ``signoff serve``: their output, every exit
code, and a wait that outlives a server restart."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from signoff.client import Client
from tests.acceptance.conftest import Server, free_port, signoff_command, start_server
from tests.acceptance.test_client import decide_when_asked, unique
from tests.acceptance.test_long_poll import until, waiters


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = tmp_path_factory.mktemp("cli-client")
    srv = start_server(f"sqlite:///{path}/signoff.db", path / "serve.log")
    yield srv
    srv.stop()


def client_env(url: str, token: str | None) -> dict[str, str]:
    """The environment of a client command: no server settings at all, and server settings
    that could not load, so that a command that read them would fail."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update(SIGNOFF_URL=url, SIGNOFF_PORT="banana",
               SIGNOFF_DATABASE_URL="postgresql://nobody@127.0.0.1:1/nothing")
    if token is not None:
        env["SIGNOFF_TOKEN"] = token
    return env


def cli(server: Server, who: str | None, *args: str, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    token = server.tokens[who] if who else None
    return subprocess.run(signoff_command(*args), env=client_env(server.url, token), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def ask(server: Server, action: str, **options: Any) -> dict[str, Any]:
    with Client(server.url, server.tokens["bot"]) as bot:
        return bot.request(action, **options)


def call(server: Server, who: str, method: str, *args: Any, **kwargs: Any) -> Any:
    with Client(server.url, server.tokens[who]) as client:
        return getattr(client, method)(*args, **kwargs)


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_the_commands_print_the_apis_json(server: Server, tmp_path: Path) -> None:
    incident = as_json(cli(server, "bot", "incident", "create", "--title", "disk full",
                           "--severity", "high", "--service", "db", "--json", cwd=tmp_path))
    assert incident["severity"] == "high" and incident["status"] == "open"
    action = unique("expand volume")
    made = cli(server, "bot", "request", "create", action, "--incident", incident["id"],
               "--risk", "low", "--ttl", "10m", "--param", "gib=50", "--param", "name=db-1",
               "--param", 'labels={"tier": 1}', "--rationale", "95% full", "--approvals", "2",
               "--idempotency-key", action, "--json", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    request = as_json(made)
    assert request["params"] == {"gib": 50, "name": "db-1", "labels": {"tier": 1}}
    assert (request["risk"], request["rationale"], request["required_approvals"]) == (
        "low", "95% full", 2)
    assert request["incident_id"] == incident["id"] and request["status"] == "pending"
    assert as_json(cli(server, "viewer", "request", "show", request["id"], "--json"))[
        "id"] == request["id"]
    listed = as_json(cli(server, "viewer", "request", "list", "--status", "pending", "--json"))
    assert request["id"] in [r["id"] for r in listed["items"]] and "next_cursor" in listed
    once = as_json(cli(server, "alice", "approve", request["id"], "--comment", "one", "--json"))
    assert once["status"] == "pending" and [a["by"] for a in once["approvals"]] == ["alice"]
    twice = as_json(cli(server, "bob", "approve", request["id"], "--json"))
    assert twice["status"] == "approved"
    outcome = as_json(cli(server, "bot", "request", "outcome", request["id"], "--failed",
                          "--detail", "no space", "--json"))
    assert outcome["outcome"]["succeeded"] is False
    other = ask(server, unique("restart"))
    assert as_json(cli(server, "bob", "reject", other["id"], "--json"))["status"] == "rejected"
    third = ask(server, unique("restart"))
    assert as_json(cli(server, "bot", "request", "cancel", third["id"], "--json"))[
        "status"] == "cancelled"
    assert list(tmp_path.iterdir()) == []  # no database file made where they ran


def test_people_get_a_summary(server: Server) -> None:
    action = unique("restart web")
    made = cli(server, "bot", "request", "create", action, "--param", "pod=web-1")
    assert made.returncode == 0, made.stderr
    fields = dict(line.split(": ", 1) for line in made.stdout.splitlines())
    assert fields["action"] == action and fields["status"] == "pending"
    assert fields["params"] == '{"pod": "web-1"}' and fields["requested by"] == "bot"
    listed = cli(server, "viewer", "request", "list", "--limit", "500").stdout.splitlines()
    assert listed[0].split("\t")[:2] == ["id", "status"]
    assert any(line.startswith(fields["id"] + "\tpending\t") for line in listed[1:])


@pytest.mark.parametrize(("verb", "who", "code"), [
    ("approve", "alice", 0), ("reject", "alice", 10), ("cancel", "bot", 12)])
def test_request_wait_exits_with_how_the_request_ended(
    server: Server, verb: str, who: str, code: int
) -> None:
    action = unique("restart db")
    request = ask(server, action, ttl=600)
    decide_when_asked(server, action, verb, who=who)
    done = cli(server, "viewer", "request", "wait", request["id"], "--timeout", "1m", "--json")
    assert done.returncode == code, done.stderr
    assert as_json(done)["status"] == {0: "approved", 10: "rejected", 12: "cancelled"}[code]
    assert "expires in" not in done.stderr  # no countdown when stderr is not a terminal


def test_create_and_wait_exits_0_when_approved_and_11_when_expired(server: Server) -> None:
    action = unique("flush cache")
    decide_when_asked(server, action, "approve")
    done = cli(server, "bot", "request", "create", action, "--wait", "--timeout", "1m")
    assert done.returncode == 0, done.stderr
    assert "status: approved" in done.stdout
    expired = cli(server, "bot", "request", "create", unique("scale"), "--ttl", "1",
                  "--wait", "--json")
    assert expired.returncode == 11, expired.stderr
    assert as_json(expired)["status"] == "expired"


def test_a_wait_that_runs_out_exits_13_with_the_request_pending(server: Server) -> None:
    request = ask(server, unique("reboot"), ttl=600)
    started = time.monotonic()
    done = cli(server, "bot", "request", "wait", request["id"], "--timeout", "1.5s", "--json")
    assert done.returncode == 13, done.stderr
    assert as_json(done)["status"] == "pending"
    assert time.monotonic() - started >= 1.5


def test_refusals_and_an_unreachable_server_exit_1_with_one_line(server: Server) -> None:
    request = ask(server, unique("restart"))
    refused = cli(server, "bot", "approve", request["id"])
    assert refused.returncode == 1 and refused.stdout == ""
    assert one_error_line(refused).startswith("signoff: forbidden: ")
    call(server, "alice", "approve", request["id"])
    late = cli(server, "bob", "reject", request["id"])
    assert late.returncode == 1
    assert one_error_line(late).startswith("signoff: request_not_pending: ")
    assert one_error_line(late).endswith("(now approved)")
    missing = cli(server, "viewer", "request", "wait", str(uuid.uuid4()))
    assert missing.returncode == 1 and "not_found" in one_error_line(missing)
    nobody = cli(server, None, "request", "list")
    assert nobody.returncode == 1 and "unauthenticated" in one_error_line(nobody)
    gone = f"http://127.0.0.1:{free_port()}"
    for args in (("request", "show", request["id"]), ("request", "create", "x")):
        done = cli(server, "bot", *args, "--url", gone)
        assert done.returncode == 1
        assert one_error_line(done).startswith(f"signoff: unreachable: cannot reach signoff at "
                                               f"{gone}")


def test_bad_usage_exits_2_and_asks_nothing(server: Server) -> None:
    # Each case of bad usage: tests/unit/test_cli_client_usage.py, in the process.
    before = call(server, "viewer", "list_requests", limit=1)["items"]
    done = cli(server, "bot", "request", "create", "x", "--ttl", "banana")
    assert done.returncode == 2 and "'banana' is not a duration" in done.stderr
    assert "Traceback" not in done.stderr
    assert call(server, "viewer", "list_requests", limit=1)["items"] == before


def test_a_wait_outlives_a_server_restart(database_url: str, tmp_path: Path) -> None:
    first = start_server(database_url, tmp_path / "first.log")
    port = int(first.url.rsplit(":", 1)[1])
    request = ask(first, unique("restart"), ttl=600)
    waiting = subprocess.Popen(
        signoff_command("request", "wait", request["id"], "--timeout", "2m", "--json"),
        env=client_env(first.url, first.tokens["bot"]), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    second: Server | None = None
    try:
        until(lambda: waiters(first) >= 1, within=30)
        first.stop()
        time.sleep(1.5)  # the command finds nobody there, and keeps trying
        second = start_server(database_url, tmp_path / "second.log", port=port)
        until(lambda: waiters(second) >= 1, within=30)
        call(second, "alice", "approve", request["id"])
        out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
        first.stop()
        if second is not None:
            second.stop()
    assert waiting.returncode == 0, err
    assert json.loads(out)["status"] == "approved"
    assert "retrying" in err and "the server answers again" in err
    assert "Traceback" not in err


def test_a_countdown_shows_when_stderr_is_a_terminal(server: Server) -> None:
    action = unique("restart api")
    request = ask(server, action, ttl=600)
    main, terminal = pty.openpty()
    env = {**client_env(server.url, server.tokens["viewer"]), "TERM": "xterm", "COLUMNS": "200"}
    waiting = subprocess.Popen(
        signoff_command("request", "wait", request["id"], "--timeout", "1m", "--json"),
        env=env, stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL)
    os.close(terminal)
    shown = b""
    try:
        deadline = time.monotonic() + 30
        while b"expires in" not in shown and time.monotonic() < deadline:
            if select.select([main], [], [], 0.5)[0]:
                shown += os.read(main, 4096)
        call(server, "alice", "approve", request["id"])
        out, _ = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
        os.close(main)
    assert b"expires in 9m" in shown and b"gives up in" in shown
    assert waiting.returncode == 0 and json.loads(out)["status"] == "approved"


def test_the_client_commands_need_no_server_settings(server: Server) -> None:
    # client_env's SIGNOFF_PORT=banana would stop any command that loads the settings.
    broken = cli(server, None, "report")
    assert broken.returncode != 0 and "SIGNOFF_PORT" in broken.stderr
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert cli(server, "viewer", "request", "list").returncode == 0

"""``signoff.client`` against a real ``signoff serve``: the calls, the gate and the decorator,
blocking and asyncio, refusals and an unreachable server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from signoff.client import (
    AsyncClient,
    Cancelled,
    Client,
    Expired,
    NotApproved,
    Rejected,
    SignoffError,
    Unreachable,
)
from tests.acceptance.conftest import Server, free_port, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: the client does not care which database is behind it."""
    path = tmp_path_factory.mktemp("client")
    srv = start_server(f"sqlite:///{path}/signoff.db", path / "serve.log")
    yield srv
    srv.stop()


def as_(server: Server, who: str) -> Client:
    return Client(server.url, server.tokens[who])


def unique(action: str) -> str:
    return f"{action} {uuid.uuid4().hex[:8]}"


def decide_when_asked(
    server: Server, marker: str, verb: str, *, who: str = "alice", comment: str | None = None
) -> threading.Thread:
    """A person who decides the pending request whose action contains ``marker``."""

    def run() -> None:
        with as_(server, who) as person:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for item in person.list_requests("pending", limit=500)["items"]:
                    if marker in item["action"]:
                        if verb == "cancel":
                            person.cancel(item["id"])
                        else:
                            getattr(person, verb)(item["id"], comment)
                        return
                time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    heavy = ("sqlalchemy", "asyncpg", "aiosqlite", "fastapi", "uvicorn", "starlette",
             "pydantic", "alembic", "signoff.db", "signoff.settings", "signoff.service")
    code = ("import signoff.client, sys; "
            f"print([m for m in sys.modules if m.startswith({heavy!r})])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_the_gate_runs_the_body_once_approved_and_reports_success(server: Server) -> None:
    action = unique("restart pod web-1")
    ran = []
    thread = decide_when_asked(server, action, "approve", comment="go")
    with as_(server, "bot") as bot:
        with bot.gate(action, risk="low", params={"pod": "web-1"}, rationale="OOM loop",
                      ttl=timedelta(minutes=10), timeout=30) as approved:
            assert bot.get(approved["id"])["outcome"] is None  # not reported before the end
            ran.append(approved)
        thread.join(5)
        final = bot.get(approved["id"])
    assert approved["status"] == "approved" and approved["decided_by"] == "alice"
    assert ran and final["outcome"]["succeeded"] is True
    assert final["params"] == {"pod": "web-1"} and final["risk"] == "low"
    assert final["rationale"] == "OOM loop" and final["requested_by"] == "bot"
    lifetime = (datetime.fromisoformat(final["expires_at"])
                - datetime.fromisoformat(final["created_at"]))
    assert lifetime == timedelta(minutes=10)


def test_a_rejected_gate_never_runs_its_body(server: Server) -> None:
    action = unique("drop table")
    thread = decide_when_asked(server, action, "reject", comment="not on a Friday")
    with (as_(server, "bot") as bot, pytest.raises(Rejected) as raised,
          bot.gate(action, timeout=30)):
        pytest.fail("the body ran")
    thread.join(5)
    assert isinstance(raised.value, NotApproved)
    assert raised.value.request["status"] == "rejected"
    assert raised.value.request["decided_by"] == "alice"
    assert "not on a Friday" in str(raised.value)


def test_an_expired_gate_never_runs_its_body(server: Server) -> None:
    started = time.monotonic()
    with (as_(server, "bot") as bot, pytest.raises(Expired) as raised,
          bot.gate(unique("scale down"), ttl=1)):
        pytest.fail("the body ran")
    assert time.monotonic() - started < 10
    assert raised.value.request["status"] == "expired"
    assert raised.value.request["disposition"] == "timeout_ignored"


def test_a_gate_that_times_out_withdraws_its_request(server: Server) -> None:
    with as_(server, "bot") as bot:
        with pytest.raises(Cancelled) as raised, bot.gate(unique("reboot"), ttl=600,
                                                          timeout=0.5):
            pytest.fail("the body ran")
        assert bot.get(raised.value.request["id"])["status"] == "cancelled"


def test_a_body_that_raises_reports_failure_and_the_error_goes_on(server: Server) -> None:
    action = unique("expand volume")
    decide_when_asked(server, action, "approve")
    failure = RuntimeError("disk is read-only")
    with as_(server, "bot") as bot:
        with pytest.raises(RuntimeError) as raised, bot.gate(action, timeout=30) as approved:
            raise failure
        outcome = bot.get(approved["id"])["outcome"]
    assert raised.value is failure
    assert outcome["succeeded"] is False
    assert outcome["detail"] == "RuntimeError: disk is read-only"


def test_the_decorator_asks_for_the_call_and_returns_its_result(server: Server) -> None:
    marker = uuid.uuid4().hex[:8]
    bot = as_(server, "bot")

    @bot.requires_approval(risk="high", ttl=300, timeout=30)
    def restart_pod(name: str, namespace: str = "default", *, grace: float = 30.0) -> str:
        return f"restarted {namespace}/{name}"

    thread = decide_when_asked(server, marker, "approve")
    with bot:
        assert restart_pod(f"web-{marker}", grace=5) == f"restarted default/web-{marker}"
        thread.join(5)
        [asked] = [r for r in bot.list_requests("approved", limit=500)["items"]
                   if marker in r["action"]]
    assert restart_pod.__name__ == "restart_pod"
    assert asked["action"] == f"restart_pod(name='web-{marker}', namespace='default', grace=5)"
    assert asked["params"] == {"name": f"web-{marker}", "namespace": "default", "grace": 5}
    assert asked["risk"] == "high" and asked["outcome"]["succeeded"] is True


def test_refusals_raise_with_the_servers_code_and_status(server: Server) -> None:
    with as_(server, "bot") as bot, as_(server, "alice") as alice:
        made = bot.request(unique("restart"), idempotency_key=uuid.uuid4().hex)
        with pytest.raises(SignoffError) as role:
            bot.approve(made["id"])  # a requester may not decide
        assert (role.value.status, role.value.code) == (403, "forbidden")
        alice.approve(made["id"], comment="fine")
        with pytest.raises(SignoffError) as late:
            alice.reject(made["id"])
        assert (late.value.status, late.value.code) == (409, "request_not_pending")
        assert late.value.current_status == "approved"
        with pytest.raises(SignoffError) as missing:
            bot.get(str(uuid.uuid4()))
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        with pytest.raises(SignoffError) as invalid:
            bot.request("restart", risk="extreme")
        assert invalid.value.status == 422 and "risk" in invalid.value.message
    with Client(server.url, "so_not-a-token") as stranger, pytest.raises(SignoffError) as who:
        stranger.get(made["id"])
    assert (who.value.status, who.value.code) == (401, "unauthenticated")


def test_the_same_idempotency_key_gives_the_same_request(server: Server) -> None:
    key, action = uuid.uuid4().hex, unique("restart")
    with as_(server, "bot") as bot:
        first = bot.request(action, ttl=60, idempotency_key=key)
        assert bot.request(action, ttl=60, idempotency_key=key)["id"] == first["id"]
        with pytest.raises(SignoffError) as reused:
            bot.request(action, ttl=61, idempotency_key=key)
    assert reused.value.code == "idempotency_key_reused"


def test_wait_is_bounded_and_wakes_on_the_decision(server: Server) -> None:
    with as_(server, "bot") as bot:
        incident = bot.create_incident(f"disk full {uuid.uuid4()}", "high", service="db")
        made = bot.request(unique("expand"), incident_id=incident["id"], ttl=600)
        started = time.monotonic()
        assert bot.wait(made["id"], timeout=1.0)["status"] == "pending"
        assert 0.9 < time.monotonic() - started < 5
        decide_when_asked(server, made["action"], "reject")
        started = time.monotonic()
        assert bot.wait(made["id"], timeout=30)["status"] == "rejected"
        assert time.monotonic() - started < 10
    assert made["incident_id"] == incident["id"]


def test_an_unreachable_server_raises_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    retried: list[float] = []
    with Client(url, "so_whatever") as client:
        with pytest.raises(Unreachable) as once:
            client.get(str(uuid.uuid4()))
        started = time.monotonic()
        with pytest.raises(Unreachable):
            client.wait(str(uuid.uuid4()), timeout=1.5,
                        on_retry=lambda exc, pause: retried.append(pause))
    assert once.value.code == "unreachable" and once.value.status is None
    assert url in once.value.message and isinstance(once.value, SignoffError)
    assert 1.4 < time.monotonic() - started < 5 and len(retried) >= 2


def test_the_environment_gives_the_url_and_the_token(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNOFF_URL", server.url + "/")
    monkeypatch.setenv("SIGNOFF_TOKEN", server.tokens["bot2"])
    with Client() as client:
        assert client.request(unique("restart"))["requested_by"] == "bot2"
    with pytest.raises(ValueError, match="not an http"):
        Client("ftp://example.com")


async def test_the_async_gate_and_decorator(server: Server) -> None:
    action = unique("restart pod api-1")
    decide_when_asked(server, action, "approve")
    async with AsyncClient(server.url, server.tokens["bot"]) as bot:
        async with bot.gate(action, ttl=120, timeout=30) as approved:
            assert approved["status"] == "approved"
        assert (await bot.get(approved["id"]))["outcome"]["succeeded"] is True

        marker = uuid.uuid4().hex[:8]

        @bot.requires_approval(timeout=30)
        async def flush_cache(region: str) -> int:
            return 42

        decide_when_asked(server, marker, "reject", comment="no")
        with pytest.raises(Rejected) as raised:
            await flush_cache(f"eu-{marker}")
        assert raised.value.request["action"] == f"flush_cache(region='eu-{marker}')"

        action = unique("resize")
        decide_when_asked(server, action, "approve")
        with pytest.raises(KeyError):
            async with bot.gate(action, timeout=30) as approved:
                raise KeyError("volume")
        outcome = (await bot.get(approved["id"]))["outcome"]
        assert outcome == {**outcome, "succeeded": False, "detail": "KeyError: 'volume'"}

        with pytest.raises(SignoffError) as refused:
            await bot.approve(approved["id"])
        assert refused.value.status == 403

        with pytest.raises(Cancelled):
            async with bot.gate(unique("noop"), ttl=600, timeout=0.2):
                pytest.fail("the body ran")


async def test_the_async_gate_expires_and_times_out(server: Server) -> None:
    async with AsyncClient(server.url, server.tokens["bot"]) as bot:
        with pytest.raises(Expired):
            async with bot.gate(unique("scale down"), ttl=1):
                pytest.fail("the body ran")
        made = await bot.request(unique("reboot"), ttl=600)
        assert (await bot.wait(made["id"], timeout=0.3))["status"] == "pending"


def test_a_decorator_refuses_the_wrong_kind_of_function(server: Server) -> None:
    async def later() -> None:
        pass

    def now() -> None:
        pass

    with as_(server, "bot") as bot, pytest.raises(TypeError, match="AsyncClient"):
        bot.requires_approval()(later)
    with pytest.raises(TypeError, match="use Client"):
        AsyncClient(server.url).requires_approval()(now)

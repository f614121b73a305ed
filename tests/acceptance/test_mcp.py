"""The MCP tools at ``/mcp`` of a real ``signoff serve``, driven by the MCP SDK's own
client over streamable HTTP: the tools and their schemas, each way a request ends and what
the agent is told to do then, refusals as tool errors worded as the API's, progress while
a tool waits, and the API's tokens at the HTTP level."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent

from tests.acceptance.conftest import Server, start_server

TOOLS = {"request_approval", "wait_for_decision", "get_request", "cancel_request",
         "report_outcome", "find_precedents"}
DECISIONS = ["approved", "rejected", "expired", "cancelled", "pending"]


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = tmp_path_factory.mktemp("mcp")
    srv = start_server(f"sqlite:///{path}/signoff.db", path / "serve.log")
    yield srv
    srv.stop()


@asynccontextmanager
async def connect(server: Server, who: str, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's client at ``/mcp``, with ``who``'s token."""
    headers = {"Authorization": f"Bearer {server.tokens[who]}"}
    async with (httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=90))
                as http,
                Client(streamable_http_client(server.url + "/mcp", http_client=http),
                       mode=mode) as client):
        yield client


def text(result: CallToolResult) -> str:
    assert len(result.content) == 1 and isinstance(result.content[0], TextContent)
    return result.content[0].text


def answer(result: CallToolResult) -> tuple[str, dict[str, Any]]:
    """A successful tool answer: its text and its structured content."""
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    return text(result), result.structured_content


def unique(action: str) -> str:
    return f"{action} {uuid.uuid4().hex[:8]}"


def api(server: Server, who: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url + "/api/v1", timeout=30,
                             headers={"Authorization": f"Bearer {server.tokens[who]}"})


async def api_refusal(server: Server, who: str, method: str, path: str,
                      body: dict[str, Any] | None = None) -> str:
    """The API's refusal of the same thing, as a tool error's text says it."""
    async with api(server, who) as http:
        response = await http.request(method, path, json=body)
    assert response.status_code >= 400, response.text
    error = response.json()["error"]
    return f"{error['code']}: {error['message']}"


async def waiters(http: httpx.AsyncClient, server: Server) -> float:
    for line in (await http.get(server.url + "/metrics")).text.splitlines():
        if line.startswith("signoff_long_poll_waiters "):
            return float(line.split()[1])
    raise AssertionError("no signoff_long_poll_waiters gauge")


async def until_someone_waits(server: Server) -> None:
    """Polled: the server is another process, with nothing to await."""
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if await waiters(http, server) >= 1:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("nobody waited")


async def decide_when_waited_on(
    server: Server, marker: str, verb: str, *, who: str = "alice", comment: str | None = None
) -> dict[str, Any]:
    """A person who decides the pending request whose action holds ``marker``, once
    someone is waiting for it."""
    async with api(server, who) as person:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = (await person.get("/approvals", params={"status": "pending",
                                                              "limit": 500})).json()["items"]
            found = [r for r in pending if marker in r["action"]]
            if found and await waiters(person, server) >= 1:
                body = {"comment": comment} if comment else {}
                response = await person.post(f"/approvals/{found[0]['id']}/{verb}", json=body)
                assert response.status_code == 200, response.text
                decided: dict[str, Any] = response.json()
                return decided
            await asyncio.sleep(0.05)
    raise AssertionError(f"nobody waited for {marker!r}")


# -- the tools --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_tools_are_listed_with_input_and_output_schemas(
    mcp_server: Server, mode: str
) -> None:
    async with connect(mcp_server, "viewer", mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.description and tool.output_schema is not None, tool.name
        assert tool.input_schema["type"] == "object"
    asking = tools["request_approval"].input_schema
    assert asking["required"] == ["action"]
    assert set(asking["properties"]) == {
        "action", "rationale", "risk", "params", "incident_id", "incident", "ttl_seconds",
        "approvers", "wait_seconds"}
    wait = asking["properties"]["wait_seconds"]
    assert (wait["minimum"], wait["maximum"], wait["default"]) == (0, 55, 45)
    assert tools["wait_for_decision"].input_schema["required"] == ["request_id"]
    assert set(tools["report_outcome"].input_schema["required"]) == {"request_id", "succeeded"}
    assert set(tools["find_precedents"].input_schema["properties"]) == {
        "service", "fingerprint", "action", "limit"}
    for name in TOOLS - {"find_precedents"}:
        output = tools[name].output_schema
        assert output is not None
        assert output["properties"]["decision"]["enum"] == DECISIONS
        assert {"id", "status", "expires_at", "decided_by", "decision_comment",
                "approvals", "outcome"} <= set(output["properties"])
    assert "precedents" in (tools["find_precedents"].output_schema or {})["properties"]


async def test_approved_while_wait_for_decision_waits_then_the_outcome_is_reported(
    mcp_server: Server,
) -> None:
    action = unique("restart deployment web")
    async with connect(mcp_server, "bot") as client:
        said, asked = answer(await client.call_tool("request_approval", {
            "action": action, "rationale": "OOM loop", "risk": "low",
            "params": {"replicas": 3}, "wait_seconds": 0}))
        assert asked["decision"] == "pending" and asked["status"] == "pending"
        assert said.startswith("PENDING") and "wait_for_decision" in said
        assert asked["expires_at"] in said and "Do not run" in said
        async with api(mcp_server, "bot") as http:  # the request as the API shows it
            shown = (await http.get(f"/approvals/{asked['id']}")).json()
        assert asked == {**shown, "decision": "pending"}

        person = asyncio.create_task(decide_when_waited_on(mcp_server, action, "approve"))
        started = time.monotonic()
        said, approved = answer(await client.call_tool("wait_for_decision", {
            "request_id": asked["id"], "wait_seconds": 30}))
        decided = await person
        assert time.monotonic() - started < 15  # woken by the decision, not the wait's end
        assert approved["decision"] == "approved" and approved["decided_by"] == "alice"
        assert approved["approvals"][0]["by"] == "alice"
        assert approved == {**decided, "decision": "approved"}
        assert said.startswith("APPROVED by alice") and "may now run" in said
        assert "report_outcome" in said and asked["id"] in said

        said, reported = answer(await client.call_tool("report_outcome", {
            "request_id": asked["id"], "succeeded": True, "detail": "3 pods ready"}))
        assert reported["outcome"]["succeeded"] is True
        assert reported["outcome"]["detail"] == "3 pods ready"
        assert "succeeded" in said and "Nothing more to do" in said

        said, again = answer(await client.call_tool("get_request", {"request_id": asked["id"]}))
        assert again["decision"] == "approved" and again["outcome"] == reported["outcome"]


async def test_a_rejection_tells_the_agent_not_to_run_it_who_decided_and_why(
    mcp_server: Server,
) -> None:
    action = unique("drop table sessions")
    person = asyncio.create_task(decide_when_waited_on(
        mcp_server, action, "reject", who="bob", comment="not during the sale"))
    async with connect(mcp_server, "bot") as client:
        said, rejected = answer(await client.call_tool(
            "request_approval", {"action": action, "wait_seconds": 30}))
    await person
    assert rejected["decision"] == "rejected" and rejected["decided_by"] == "bob"
    assert rejected["decision_comment"] == "not during the sale"
    assert said.startswith("REJECTED by bob") and '"not during the sale"' in said
    assert f'Do not run the action "{action}"' in said


async def test_an_expired_request_answers_at_its_deadline_and_must_not_run(
    mcp_server: Server,
) -> None:
    action = unique("failover db")
    async with connect(mcp_server, "bot") as client:
        started = time.monotonic()
        said, expired = answer(await client.call_tool(
            "request_approval", {"action": action, "ttl_seconds": 2, "wait_seconds": 20}))
    assert time.monotonic() - started < 10
    assert expired["decision"] == "expired" and expired["decided_by"] == "timeout"
    assert said.startswith("EXPIRED") and "Do not run" in said
    assert "request_approval" in said  # ask again if it is still needed


async def test_cancel_request_withdraws_it_and_only_its_requester_may(
    mcp_server: Server,
) -> None:
    async with connect(mcp_server, "bot") as bot, connect(mcp_server, "bot2") as bot2:
        _, asked = answer(await bot.call_tool(
            "request_approval", {"action": unique("scale down"), "wait_seconds": 0}))
        rid = asked["id"]
        refused = await bot2.call_tool("cancel_request", {"request_id": rid})
        assert refused.is_error
        assert text(refused) == await api_refusal(
            mcp_server, "bot2", "POST", f"/approvals/{rid}/cancel")
        assert text(refused).startswith("forbidden: ")

        said, cancelled = answer(await bot.call_tool("cancel_request", {"request_id": rid}))
        assert cancelled["decision"] == "cancelled" and cancelled["decided_by"] == "bot"
        assert said.startswith("CANCELLED (by bot)") and "Do not run" in said

        twice = await bot.call_tool("cancel_request", {"request_id": rid})
        assert twice.is_error and text(twice).startswith("request_not_pending: ")
        assert text(twice) == await api_refusal(
            mcp_server, "bot", "POST", f"/approvals/{rid}/cancel")


async def test_an_incident_is_opened_with_the_request_or_joined_by_its_fingerprint(
    mcp_server: Server,
) -> None:
    fingerprint = uuid.uuid4().hex
    incident = {"title": "web 5xx", "severity": "high", "service": "web",
                "fingerprint": fingerprint}
    async with connect(mcp_server, "bot") as client:
        _, first = answer(await client.call_tool("request_approval", {
            "action": unique("restart web"), "incident": incident, "wait_seconds": 0}))
        _, second = answer(await client.call_tool("request_approval", {
            "action": unique("roll back web"), "incident": incident, "wait_seconds": 0}))
        both = await client.call_tool("request_approval", {
            "action": "x", "incident": incident, "incident_id": first["incident_id"]})
    assert first["incident_id"] is not None
    assert second["incident_id"] == first["incident_id"]
    async with api(mcp_server, "viewer") as http:
        opened = (await http.get(f"/incidents/{first['incident_id']}")).json()
    assert (opened["fingerprint"], opened["service"], opened["severity"]) == (
        fingerprint, "web", "high")
    assert both.is_error and text(both).startswith("invalid: ")


async def test_find_precedents_shows_how_similar_cases_ended(mcp_server: Server) -> None:
    fingerprint = uuid.uuid4().hex
    action = unique("Restart Pod api-7")
    async with connect(mcp_server, "bot") as client:
        said, none = answer(await client.call_tool(
            "find_precedents", {"fingerprint": fingerprint}))
        assert none == {"precedents": []} and "No earlier case" in said

        person = asyncio.create_task(decide_when_waited_on(mcp_server, action, "approve"))
        _, approved = answer(await client.call_tool("request_approval", {
            "action": action, "wait_seconds": 30, "incident": {
                "title": "api down", "severity": "critical", "service": "api",
                "fingerprint": fingerprint}}))
        await person
        answer(await client.call_tool("report_outcome", {
            "request_id": approved["id"], "succeeded": True}))

        said, found = answer(await client.call_tool(
            "find_precedents", {"fingerprint": fingerprint}))
        [entry] = found["precedents"]
        assert entry["incident_id"] == approved["incident_id"]
        assert entry["disposition"] == "human_approved" and entry["resolution_type"] == "action"
        assert entry["actions"][0]["action"] == action
        assert entry["summary"] in said and said.startswith("1 earlier case(s)")

        _, by_action = answer(await client.call_tool(
            "find_precedents", {"service": "api", "action": "restart pod API-7", "limit": 3}))
        assert [e["id"] for e in by_action["precedents"]] == [entry["id"]]
        _, other = answer(await client.call_tool(
            "find_precedents", {"fingerprint": fingerprint, "action": "drop table"}))
        assert other == {"precedents": []}


# -- refusals -----------------------------------------------------------------------------


async def test_a_viewer_asking_gets_the_api_refusal_as_a_tool_error(mcp_server: Server) -> None:
    async with connect(mcp_server, "viewer") as client:
        refused = await client.call_tool("request_approval", {"action": "restart web"})
        assert refused.is_error and refused.structured_content is None
        assert text(refused).startswith("forbidden: ")
        assert text(refused) == await api_refusal(
            mcp_server, "viewer", "POST", "/approvals", {"action": "restart web"})
        # the session goes on
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS


@pytest.mark.parametrize("wait", [56, 55.5, -1])
async def test_a_wait_out_of_range_is_refused_not_clamped(mcp_server: Server, wait: float) -> None:
    action = unique("restart cache")
    async with connect(mcp_server, "bot") as client:
        refused = await client.call_tool(
            "request_approval", {"action": action, "wait_seconds": wait})
        waited = await client.call_tool(
            "wait_for_decision", {"request_id": str(uuid.uuid4()), "wait_seconds": wait})
    for result in (refused, waited):
        assert result.is_error
        assert text(result).startswith("invalid: wait_seconds: ")
    async with api(mcp_server, "viewer") as http:
        listed = (await http.get("/approvals", params={"limit": 500})).json()["items"]
    assert not [r for r in listed if r["action"] == action]  # nothing was asked


@pytest.mark.parametrize(("tool", "arguments", "says"), [
    ("request_approval", {}, "invalid: action: Field required"),
    ("request_approval", {"action": 5}, "invalid: action: "),
    ("request_approval", {"action": "x", "risk": "extreme"}, "invalid: risk: "),
    ("request_approval", {"action": "x", "ttl_seconds": "10m"}, "invalid: ttl_seconds: "),
    ("request_approval", {"action": "x", "incident": {"title": "t"}},
     "invalid: incident.severity: Field required"),
    ("request_approval", {"action": "x", "wait": 5}, "invalid: unknown argument(s) wait:"),
    ("report_outcome", {"request_id": "x", "succeeded": "yes"}, "invalid: succeeded: "),
    ("get_request", {}, "invalid: request_id: Field required"),
    ("find_precedents", {"limit": 0}, "invalid: limit: "),
])
async def test_missing_or_mistyped_arguments_are_tool_errors(
    mcp_server: Server, tool: str, arguments: dict[str, Any], says: str
) -> None:
    async with connect(mcp_server, "bot") as client:
        result = await client.call_tool(tool, arguments)
        assert result.is_error and text(result).startswith(says), text(result)
        _, fine = answer(await client.call_tool("find_precedents", {"limit": 1}))
    assert "precedents" in fine


async def test_unknown_ids_and_refused_states_read_as_the_api_words_them(
    mcp_server: Server,
) -> None:
    async with connect(mcp_server, "bot") as client:
        unknown = await client.call_tool("get_request", {"request_id": "no-such-id"})
        assert text(unknown) == await api_refusal(
            mcp_server, "bot", "GET", "/approvals/no-such-id")
        assert text(unknown).startswith("not_found: ")
        _, asked = answer(await client.call_tool(
            "request_approval", {"action": unique("purge cdn"), "wait_seconds": 0}))
        early = await client.call_tool(
            "report_outcome", {"request_id": asked["id"], "succeeded": True})
        assert early.is_error and text(early) == await api_refusal(
            mcp_server, "bot", "POST", f"/approvals/{asked['id']}/outcome", {"succeeded": True})
        too_long = await client.call_tool(
            "request_approval", {"action": "x" * 1001, "wait_seconds": 0})
        assert too_long.is_error and text(too_long) == await api_refusal(
            mcp_server, "bot", "POST", "/approvals", {"action": "x" * 1001})


# -- progress -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_waiting_tool_reports_progress_at_least_every_10_seconds(
    mcp_server: Server, mode: str
) -> None:
    heard: list[tuple[float, float, float | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        heard.append((time.monotonic(), done, total))

    async with connect(mcp_server, "bot", mode) as client:
        _, asked = answer(await client.call_tool(
            "request_approval", {"action": unique("rotate keys"), "wait_seconds": 0}))
        started = time.monotonic()
        said, still = answer(await client.call_tool(
            "wait_for_decision", {"request_id": asked["id"], "wait_seconds": 11},
            progress_callback=progress))
        ended = time.monotonic()
    assert still["decision"] == "pending" and said.startswith("PENDING")
    assert 10.5 < ended - started < 20
    assert len(heard) >= 2
    moments = [started] + [at for at, _, _ in heard] + [ended]
    assert max(b - a for a, b in itertools.pairwise(moments)) < 10
    assert [done for _, done, _ in heard] == sorted(done for _, done, _ in heard)
    assert {total for _, _, total in heard} == {11}


# -- the tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic abc"])
def test_no_token_or_a_bad_one_is_401_at_the_http_level(
    mcp_server: Server, header: str | None
) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    if header is not None:
        headers["Authorization"] = header
    response = httpx.post(mcp_server.url + "/mcp", headers=headers, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "unauthenticated" and error["message"]


@pytest.fixture
def pg_server(db_url_postgres: str, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(db_url_postgres, tmp_path / "serve.log")
    yield srv
    srv.stop()


@pytest.mark.postgres
async def test_approved_while_waiting_on_postgresql_too(pg_server: Server) -> None:
    action = unique("restart worker")
    person = asyncio.create_task(decide_when_waited_on(pg_server, action, "approve"))
    async with connect(pg_server, "bot") as client:
        said, approved = answer(await client.call_tool(
            "request_approval", {"action": action, "wait_seconds": 30}))
    await person
    assert approved["decision"] == "approved" and said.startswith("APPROVED by alice")


# -- nothing left behind ------------------------------------------------------------------


async def test_a_client_gone_mid_wait_leaves_no_waiter_behind(mcp_server: Server) -> None:
    async with connect(mcp_server, "bot") as client:
        _, asked = answer(await client.call_tool(
            "request_approval", {"action": unique("flush queue"), "wait_seconds": 0}))

    async def wait() -> None:
        async with connect(mcp_server, "bot") as client:
            await client.call_tool(
                "wait_for_decision", {"request_id": asked["id"], "wait_seconds": 40})

    waiting = asyncio.create_task(wait())
    await until_someone_waits(mcp_server)
    async with httpx.AsyncClient() as http:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        gone = time.monotonic()
        while await waiters(http, mcp_server) >= 1:
            assert time.monotonic() - gone < 5, "the tool went on waiting"
            await asyncio.sleep(0.05)


def test_a_server_shutting_down_answers_a_waiting_tool_first(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path}/signoff.db", tmp_path / "serve.log")
    try:
        async def scenario() -> tuple[str, dict[str, Any], float]:
            async with connect(server, "bot") as client:
                _, asked = answer(await client.call_tool(
                    "request_approval", {"action": unique("reindex"), "wait_seconds": 0}))
                waiting = asyncio.create_task(client.call_tool(
                    "wait_for_decision", {"request_id": asked["id"], "wait_seconds": 50}))
                await until_someone_waits(server)
                server.process.send_signal(signal.SIGTERM)
                stopping = time.monotonic()
                said, still = answer(await waiting)
                return said, still, time.monotonic() - stopping

        said, still, took = asyncio.run(scenario())
        assert still["decision"] == "pending" and said.startswith("PENDING")
        assert took < 10
        server.process.wait(15)  # and the server is gone soon after: nothing held it up
    finally:
        server.stop()

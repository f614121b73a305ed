"""``signoff mcp``: the same tools over stdio, spawned by the MCP SDK's stdio client as a
local client would, acting through a real ``signoff serve`` with one token and no
database of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.acceptance.conftest import Server, free_port, signoff_command, start_server
from tests.acceptance.test_mcp import (
    TOOLS,
    answer,
    api_refusal,
    connect,
    decide_when_waited_on,
    text,
    unique,
)


@pytest.fixture(scope="module")
def stdio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = tmp_path_factory.mktemp("mcp-stdio")
    srv = start_server(f"sqlite:///{path}/signoff.db", path / "serve.log")
    yield srv
    srv.stop()


@asynccontextmanager
async def spawn(url: str, token: str, cwd: Path) -> AsyncIterator[Client]:
    """``signoff mcp`` as a local client starts it: only what the client's environment
    passes on (no SIGNOFF_DATABASE_URL), plus the URL and the token."""
    command, *args = signoff_command("mcp")
    params = StdioServerParameters(
        command=command, args=args, cwd=cwd,
        env={"SIGNOFF_URL": url, "SIGNOFF_TOKEN": token})
    async with Client(params, read_timeout_seconds=90) as client:
        yield client


async def test_the_tools_over_stdio_and_an_approved_round_trip(
    stdio_server: Server, tmp_path: Path
) -> None:
    action = unique("restart deployment api")
    heard: list[float] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        heard.append(done)

    async with connect(stdio_server, "bot") as over_http:
        served = {t.name: t for t in (await over_http.list_tools()).tools}
    async with spawn(stdio_server.url, stdio_server.tokens["bot"], tmp_path) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert set(listed) == TOOLS
        for name, tool in listed.items():  # the same tools as serve's
            assert tool.input_schema == served[name].input_schema, name
            assert tool.output_schema == served[name].output_schema, name

        person = asyncio.create_task(decide_when_waited_on(
            stdio_server, action, "approve", comment="go ahead"))
        said, approved = answer(await client.call_tool(
            "request_approval", {"action": action, "risk": "low", "wait_seconds": 30,
                                 "incident": {"title": "api slow", "severity": "medium"}},
            progress_callback=progress))
        decided = await person
        assert approved == {**decided, "decision": "approved"}
        assert approved["requested_by"] == "bot" and approved["incident_id"] is not None
        assert said.startswith("APPROVED by alice") and '"go ahead"' in said
        assert "report_outcome" in said and heard

        said, reported = answer(await client.call_tool(
            "report_outcome", {"request_id": approved["id"], "succeeded": False,
                               "detail": "rollout stuck"}))
        assert reported["outcome"]["succeeded"] is False and "failed" in said

        refused = await client.call_tool("cancel_request", {"request_id": approved["id"]})
        assert refused.is_error and text(refused) == await api_refusal(
            stdio_server, "bot", "POST", f"/approvals/{approved['id']}/cancel")
        _, still = answer(await client.call_tool("get_request", {"request_id": approved["id"]}))
        assert still["outcome"] == reported["outcome"]
    assert os.listdir(tmp_path) == []  # no database of its own, not even a file


async def test_over_stdio_the_token_decides_what_the_agent_may_do(
    stdio_server: Server, tmp_path: Path
) -> None:
    async with spawn(stdio_server.url, stdio_server.tokens["viewer"], tmp_path) as client:
        refused = await client.call_tool("request_approval", {"action": "restart web"})
        assert refused.is_error and text(refused) == await api_refusal(
            stdio_server, "viewer", "POST", "/approvals", {"action": "restart web"})
        unknown = await client.call_tool("wait_for_decision", {"request_id": "nope"})
        assert unknown.is_error and text(unknown).startswith("not_found: ")


async def test_an_unreachable_server_is_a_tool_error_not_a_broken_session(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with spawn(url, "some-token", tmp_path) as client:
        result = await client.call_tool("get_request", {"request_id": "x"})
        assert result.is_error
        assert text(result).startswith(f"unreachable: cannot reach signoff at {url}")
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS


def test_without_a_token_signoff_mcp_exits_2_and_says_why(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "SIGNOFF_URL": "http://127.0.0.1:8700"}
    done = subprocess.run(signoff_command("mcp"), env=env, cwd=tmp_path, input="",
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "SIGNOFF_TOKEN" in done.stderr and done.stdout == ""

"""``signoff mcp``: the same tools over stdio, for a local MCP client (an editor, a desktop
assistant), acting through the HTTP API with one token, by way of the Python client.

It needs no database and loads none of the server: only the URL and the token. Standard
output is the protocol's; logs go to standard error.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

from signoff.client import AsyncClient, SignoffError
from signoff.logs import LEVELS, configure_logging
from signoff.mcp.tools import BackendFor, Page, Refused, SignoffMCP


@contextmanager
def _refusals() -> Iterator[None]:
    """The API's refusals (and an unreachable server) as the API worded them."""
    try:
        yield
    except SignoffError as exc:
        raise Refused(exc.code, exc.message) from None


class ClientBackend:
    """The tools' calls as HTTP calls to the API, with the token ``signoff mcp`` was given."""

    closing = False  # a server that shuts down answers the long-poll; the wait goes on

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def create_incident(self, fields: dict[str, Any]) -> Page:
        with _refusals():
            return await self.client.create_incident(
                fields["title"], fields["severity"], service=fields.get("service"),
                fingerprint=fields.get("fingerprint"))

    async def create_request(self, fields: dict[str, Any]) -> Page:
        with _refusals():
            return await self.client.request(
                fields["action"], incident_id=fields.get("incident_id"),
                risk=fields.get("risk"), params=fields.get("params"),
                rationale=fields.get("rationale"), ttl=fields.get("ttl_seconds"),
                approvers=fields.get("approvers"))

    async def get_request(self, request_id: str, wait: float = 0.0) -> Page:
        with _refusals():
            if wait <= 0:
                return await self.client.get(request_id)
            return await self.client.wait(request_id, wait)

    async def cancel(self, request_id: str) -> Page:
        with _refusals():
            return await self.client.cancel(request_id)

    async def report_outcome(self, request_id: str, succeeded: bool, detail: str | None) -> Page:
        with _refusals():
            return await self.client.report_outcome(request_id, succeeded, detail)

    async def list_knowledge(
        self, *, service: str | None, fingerprint: str | None, limit: int, cursor: str | None
    ) -> Page:
        with _refusals():
            return await self.client.list_knowledge(
                service=service, fingerprint=fingerprint, limit=limit, cursor=cursor)


def stdio_server(client: AsyncClient) -> SignoffMCP:
    """The tools on ``client``, which the server closes when it stops."""
    backend = ClientBackend(client)

    def for_call(_: Context[Any, Any]) -> ClientBackend:
        return backend

    @asynccontextmanager
    async def through_the_api(_: MCPServer[BackendFor]) -> AsyncIterator[BackendFor]:
        async with client:
            yield for_call

    return SignoffMCP(through_the_api)


def run(url: str | None, token: str | None, *, log_level: str | None = None) -> int:
    """Serve the tools on standard input and output until the client closes them; the
    exit code: 2 without a token or with a URL that is not one."""
    level = log_level or "warning"
    if level not in LEVELS:
        print(f"signoff mcp: --log-level: one of {', '.join(LEVELS)}", file=sys.stderr)
        return 2
    configure_logging(level)
    if not token or not token.strip():
        print("signoff mcp: no token: set SIGNOFF_TOKEN (or --token) to the API token the "
              "tools act with", file=sys.stderr)
        return 2
    try:
        client = AsyncClient(url, token)
    except ValueError as exc:
        print(f"signoff mcp: SIGNOFF_URL: {exc}", file=sys.stderr)
        return 2
    stdio_server(client).run("stdio")
    return 0

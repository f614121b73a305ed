"""``/mcp`` in ``signoff serve``: the tools on the service, with the API's bearer tokens.

The transport is the SDK's streamable HTTP, stateless: each POST is answered on its own,
so any replica behind a load balancer can take any call (there is no session to stick
to), and a tool that waits streams its progress on that POST's own answer. Each HTTP
request is authenticated as the API authenticates one (a missing or unknown token: 401 in
the API's error shape), and each tool call again with the role its API route needs, so
that every refusal reads as the API's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, TypeVar

from fastapi import FastAPI
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from signoff import errors
from signoff.http import MAX_BODY, authorize, body_or_raise, describe_validation
from signoff.lifecycle import Principal, Role
from signoff.logs import get_logger
from signoff.mcp.tools import BackendFor, Page, Refused, SignoffMCP
from signoff.schemas import FilterText, IncidentIn, OutcomeIn, RequestIn
from signoff.service import Service

log = get_logger("signoff.mcp")
M = TypeVar("M", bound=BaseModel)
_FILTER: TypeAdapter[str | None] = TypeAdapter(FilterText)


@contextmanager
def _refusals() -> Iterator[None]:
    """The service's refusals, and a database that fails, as the API words them."""
    try:
        yield
    except errors.SignoffError as exc:
        raise Refused(exc.code, exc.message) from None
    except (OperationalError, OSError) as exc:
        log.warning("database_unavailable", error=repr(exc))
        raise Refused("unavailable", "the database is unavailable; try again") from None
    except DBAPIError as exc:
        log.error("database_error", error=str(exc.orig))
        raise Refused("unavailable", "the database refused the operation; try again") from None


def _parsed(model: type[M], fields: dict[str, Any]) -> M | errors.InvalidInput:
    """The arguments as the API's body ``model``, or the refusal it would answer."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        return errors.InvalidInput(describe_validation(list(exc.errors())))


def _filter(name: str, value: str | None) -> str | None:
    """A text filter the database can compare, as the API's query parameters are."""
    try:
        return _FILTER.validate_python(value)
    except ValidationError as exc:
        raise errors.InvalidInput(f"{name}: {exc.errors()[0]['msg']}") from None


class ServiceBackend:
    """One tool call on the service, as the caller whose token came with it."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.service: Service = request.app.state.service

    @classmethod
    def for_call(cls, ctx: Context[Any, Any]) -> ServiceBackend:
        request = ctx.request_context.request
        if not isinstance(request, Request):  # only HTTP brings calls here
            raise Refused("unauthenticated", "this call came without an HTTP request")
        return cls(request)

    @property
    def closing(self) -> bool:
        return self.service.waiters.closing

    async def _who(self, role: Role) -> Principal:
        return await authorize(self.request, role)

    async def create_incident(self, fields: dict[str, Any]) -> Page:
        with _refusals():
            who = await self._who(Role.REQUESTER)
            out, _ = await self.service.create_incident(
                who, body_or_raise(_parsed(IncidentIn, fields)))
            return out

    async def create_request(self, fields: dict[str, Any]) -> Page:
        with _refusals():
            who = await self._who(Role.REQUESTER)
            out, _ = await self.service.create_request(
                who, body_or_raise(_parsed(RequestIn, fields)))
            return out

    async def get_request(self, request_id: str, wait: float = 0.0) -> Page:
        with _refusals():
            who = await self._who(Role.VIEWER)
            return await self.service.get_request(who, request_id, wait=wait)

    async def cancel(self, request_id: str) -> Page:
        with _refusals():
            return await self.service.cancel(await self._who(Role.REQUESTER), request_id)

    async def report_outcome(self, request_id: str, succeeded: bool, detail: str | None) -> Page:
        with _refusals():
            who = await self._who(Role.REQUESTER)
            body = _parsed(OutcomeIn, {"succeeded": succeeded, "detail": detail})
            return await self.service.report_outcome(who, request_id, body)

    async def list_knowledge(
        self, *, service: str | None, fingerprint: str | None, limit: int, cursor: str | None
    ) -> Page:
        with _refusals():
            who = await self._who(Role.VIEWER)
            return await self.service.list_knowledge(
                who, service=_filter("service", service),
                fingerprint=_filter("fingerprint", fingerprint), limit=limit, cursor=cursor)


@asynccontextmanager
async def _on_the_service(_: MCPServer[BackendFor]) -> AsyncIterator[BackendFor]:
    yield ServiceBackend.for_call


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


class McpEndpoint:
    """The ASGI app at ``/mcp``: the caller's token checked as the API checks it, then the
    SDK's streamable HTTP transport, whose session manager runs in the app's lifespan."""

    def __init__(self) -> None:
        self.server = SignoffMCP(_on_the_service)
        # Builds the session manager this endpoint drives (its Starlette app goes unused:
        # it would put itself in the scope as the app, where authorize finds the service).
        # DNS rebinding protection would refuse every host name but localhost, and cannot
        # be needed: a page that rebinds a name to this server has no token to send.
        self.server.streamable_http_app(
            stateless_http=True, max_request_body_size=MAX_BODY,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.sessions = self.server.session_manager
        self.route = Route("/mcp", endpoint=self, include_in_schema=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A refusal propagates to the app's error handlers: the API's 401 answer.
        await authorize(Request(scope, receive), Role.VIEWER)
        await self.sessions.handle_request(scope, receive, send)

    def around(self, lifespan: Lifespan) -> Lifespan:
        """``lifespan`` with the session manager running inside it: it starts after the
        app's background work and stops before it."""

        @asynccontextmanager
        async def both(app: FastAPI) -> AsyncIterator[None]:
            async with lifespan(app), self.sessions.run():
                yield

        return both

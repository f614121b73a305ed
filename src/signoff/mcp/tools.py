"""The MCP tools, defined once over a ``Backend``: the service in ``signoff serve``, the HTTP
API (through the Python client) in ``signoff mcp``.

A refusal, by the API or of arguments that do not fit a tool, is a tool error
(``isError``) whose text is the API's error code and message: the model reads it and can
correct its call; the session goes on. A tool that waits long-polls in slices of at most
``POLL_SECONDS`` and reports progress before each one, so that a client that asked for
progress hears from it well within every 10 s, and it never waits past ``MAX_WAIT``:
MCP clients give up on a call after about a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal, Protocol, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr, ValidationError

from signoff import __version__
from signoff.mcp.answers import (
    Precedents,
    RequestAnswer,
    next_step,
    precedents_text,
    refusal_text,
    with_decision,
)

MAX_WAIT = 55.0
DEFAULT_WAIT = 45.0
POLL_SECONDS = 9.0  # one long-poll; its round trip keeps the gap between reports under 10 s
MAX_PRECEDENTS = 500
SCAN_PAGE, SCAN_LIMIT = 200, 1_000  # knowledge entries read at most, filtering by action
Page = dict[str, Any]


class Refused(ToolError):
    """A refusal to hand back to the model as a tool error: the API's code and message."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(refusal_text(code, message))


class Backend(Protocol):
    """What the tools need done, in the API's terms; a refusal raises ``Refused``."""

    @property
    def closing(self) -> bool:
        """The server is shutting down: a wait answers with what it has."""
        ...

    async def create_incident(self, fields: dict[str, Any]) -> Page: ...

    async def create_request(self, fields: dict[str, Any]) -> Page: ...

    async def get_request(self, request_id: str, wait: float = 0.0) -> Page: ...

    async def cancel(self, request_id: str) -> Page: ...

    async def report_outcome(
        self, request_id: str, succeeded: bool, detail: str | None) -> Page: ...

    async def list_knowledge(
        self, *, service: str | None, fingerprint: str | None, limit: int,
        cursor: str | None) -> Page: ...


# The server's lifespan yields this: the backend that serves one call.
BackendFor = Callable[[Context[Any, Any]], Backend]
Lifespan = Callable[[MCPServer[BackendFor]], AbstractAsyncContextManager[BackendFor]]


def backend_of(ctx: Context[Any, Any]) -> Backend:
    backend_for = cast(BackendFor, ctx.request_context.lifespan_context)
    return backend_for(ctx)


# -- the answers ------------------------------------------------------------------------


def request_answer(request: Mapping[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=next_step(request))],
                          structured_content=with_decision(request))


def refused_answer(refusal: Refused) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=str(refusal))],
                          is_error=True)


def _described(exc: ValidationError) -> str:
    """Arguments that do not fit the schema, in one sentence, as the API words a bad body."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts) or "invalid arguments"


async def await_decision(
    backend: Backend, ctx: Context[Any, Any], request: Page, seconds: float
) -> Page:
    """``request`` once it is no longer pending, or as it is after ``seconds``."""
    start = time.monotonic()
    reading = request
    while reading["status"] == "pending" and not backend.closing:
        left = seconds - (time.monotonic() - start)
        if left <= 0:
            break
        await ctx.report_progress(
            time.monotonic() - start, seconds,
            f"waiting for a decision on request {reading['id']}")
        reading = await backend.get_request(reading["id"], wait=min(POLL_SECONDS, left))
    return reading


# -- the tools ------------------------------------------------------------------------

RequestId = Annotated[StrictStr, Field(
    description="The id of the approval request, as request_approval answered it.")]
WaitSeconds = Annotated[float, Field(
    ge=0, le=MAX_WAIT,
    description=f"How long to wait for a decision, 0 to {MAX_WAIT:g} seconds (not "
                "clamped). While pending, call wait_for_decision again.")]
Answer = Annotated[CallToolResult, RequestAnswer]


class IncidentIn(BaseModel):
    """An incident to open; an open incident with the same fingerprint is joined instead."""

    title: StrictStr
    severity: Literal["critical", "high", "medium", "low", "info"]
    service: StrictStr | None = None
    fingerprint: StrictStr | None = Field(default=None, description=(
        "Stable identity of the problem (e.g. the alert's fingerprint): an open incident "
        "with it is joined rather than a second one opened."))


async def request_approval(
    action: Annotated[StrictStr, Field(description=(
        "What will be done, precisely, as a person should approve it: the command, the "
        "target, the scope (e.g. 'restart deployment web in namespace prod')."))],
    ctx: Context[Any, Any],
    rationale: Annotated[StrictStr | None, Field(
        description="Why: what is wrong and why this action should fix it.")] = None,
    risk: Annotated[Literal["low", "medium", "high", "critical"], Field(
        description="How bad it would be if the action went wrong.")] = "medium",
    params: Annotated[dict[str, Any] | None, Field(
        description="The action's parameters as a JSON object, shown to the approvers."),
    ] = None,
    incident_id: Annotated[StrictStr | None, Field(
        description="The incident this action is for, if it is already known.")] = None,
    incident: Annotated[IncidentIn | None, Field(
        description="Or the incident to open (or join, by fingerprint) for it.")] = None,
    ttl_seconds: Annotated[StrictInt | None, Field(ge=1, description=(
        "Seconds people have to decide (default: the server's, usually 15 minutes); "
        "then the request expires unapproved."))] = None,
    approvers: Annotated[list[StrictStr] | None, Field(description=(
        "Who should decide: names, or group:NAME. Passed to the server, which does not "
        "yet restrict deciding to them."))] = None,
    wait_seconds: WaitSeconds = DEFAULT_WAIT,
) -> Answer:
    """Ask people for sign-off before running an action that changes a production system,
    and wait for their decision. Run the action only if the decision is approved, then
    call report_outcome. If rejected, expired or cancelled, do not run it. If still
    pending, call wait_for_decision."""
    backend = backend_of(ctx)
    if incident is not None and incident_id is not None:
        raise Refused("invalid", "give incident_id or incident, not both")
    if incident is not None:
        opened = await backend.create_incident(incident.model_dump(exclude_none=True))
        incident_id = opened["id"]
    given = {"action": action, "rationale": rationale, "risk": risk, "params": params,
             "incident_id": incident_id, "ttl_seconds": ttl_seconds, "approvers": approvers}
    made = await backend.create_request({k: v for k, v in given.items() if v is not None})
    return request_answer(await await_decision(backend, ctx, made, wait_seconds))


async def wait_for_decision(
    request_id: RequestId, ctx: Context[Any, Any], wait_seconds: WaitSeconds = DEFAULT_WAIT,
) -> Answer:
    """Wait for the decision on a pending approval request. Approved: run the action, then
    call report_outcome. Rejected, expired or cancelled: do not run it. Still pending: call
    this again, before the request's expires_at."""
    backend = backend_of(ctx)
    reading = await backend.get_request(request_id)
    return request_answer(await await_decision(backend, ctx, reading, wait_seconds))


async def get_request(request_id: RequestId, ctx: Context[Any, Any]) -> Answer:
    """Read an approval request as it is now, without waiting."""
    return request_answer(await backend_of(ctx).get_request(request_id))


async def cancel_request(request_id: RequestId, ctx: Context[Any, Any]) -> Answer:
    """Withdraw a pending approval request that is no longer needed; only the token that
    asked may. The action must then not run."""
    return request_answer(await backend_of(ctx).cancel(request_id))


async def report_outcome(
    request_id: RequestId,
    succeeded: Annotated[StrictBool, Field(description="Whether the action worked.")],
    ctx: Context[Any, Any],
    detail: Annotated[StrictStr | None, Field(
        description="What happened, briefly: output, error, what was checked.")] = None,
) -> Answer:
    """Report how an approved action went, once it has run. Success resolves its incident;
    the case becomes a precedent for later requests."""
    return request_answer(await backend_of(ctx).report_outcome(request_id, succeeded, detail))


def _proposes(entry: Mapping[str, Any], needle: str) -> bool:
    return any(needle in str(a.get("action", "")).casefold()
               for a in entry.get("actions") or [])


async def find_precedents(
    ctx: Context[Any, Any],
    service: Annotated[StrictStr | None, Field(
        description="Only cases of incidents on this service.")] = None,
    fingerprint: Annotated[StrictStr | None, Field(
        description="Only cases of incidents with this fingerprint.")] = None,
    action: Annotated[StrictStr | None, Field(description=(
        "Only cases where a proposed action contains this text (ignoring case); the "
        f"latest {SCAN_LIMIT} cases are searched."))] = None,
    limit: Annotated[StrictInt, Field(ge=1, le=MAX_PRECEDENTS)] = 5,
) -> Annotated[CallToolResult, Precedents]:
    """How similar cases ended: the latest knowledge entries (case files of resolved
    incidents: what was proposed, who decided, how it went) that match. Look before asking
    for sign-off, to propose what worked before."""
    backend = backend_of(ctx)
    found: list[Page] = []
    scanned, cursor = 0, None
    while True:
        page = await backend.list_knowledge(
            service=service, fingerprint=fingerprint, cursor=cursor,
            limit=limit if action is None else SCAN_PAGE)
        scanned += len(page["items"])
        found += [e for e in page["items"]
                  if action is None or _proposes(e, action.casefold())]
        cursor = page.get("next_cursor")
        if len(found) >= limit or cursor is None or scanned >= SCAN_LIMIT:
            break
    found = found[:limit]
    return CallToolResult(content=[TextContent(type="text", text=precedents_text(found))],
                          structured_content={"precedents": found})


# -- the server -----------------------------------------------------------------------

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
TOOLS: list[tuple[Callable[..., Any], ToolAnnotations]] = [
    (request_approval, ToolAnnotations(title="Ask people for sign-off", read_only_hint=False,
                                       destructive_hint=False, idempotent_hint=False,
                                       open_world_hint=False)),
    (wait_for_decision, READ), (get_request, READ), (cancel_request, WRITE),
    (report_outcome, WRITE), (find_precedents, READ),
]
INSTRUCTIONS = (
    "signoff is a human sign-off gate: before you run an action that changes a production "
    "system, ask with request_approval and run it only once the decision is approved; then "
    "report its outcome with report_outcome. Never run an action that was rejected, expired "
    "or cancelled. find_precedents shows how similar cases ended.")


class SignoffMCP(MCPServer[BackendFor]):
    """The MCP server with signoff's tools, whose refusals reach the model as tool errors
    worded as the API words them."""

    def __init__(self, lifespan: Lifespan) -> None:
        tools = [Tool.from_function(fn, description=" ".join((fn.__doc__ or "").split()),
                                    annotations=hints) for fn, hints in TOOLS]
        self.arguments = {t.name: frozenset(t.parameters.get("properties", ())) for t in tools}
        super().__init__("signoff", version=__version__, instructions=INSTRUCTIONS,
                         tools=tools, lifespan=lifespan)

    async def call_tool(
        self, name: str, arguments: dict[str, Any],
        context: Context[BackendFor, Any] | None = None,
    ) -> CallToolResult | InputRequiredResult:
        unknown = sorted(set(arguments) - self.arguments.get(name, frozenset(arguments)))
        if unknown:  # a misspelt optional argument would be ignored
            return refused_answer(Refused("invalid", (
                f"unknown argument(s) {', '.join(unknown)}: {name} takes "
                f"{', '.join(sorted(self.arguments[name]))}")))
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, Refused):
                return refused_answer(cause)
            if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
                return refused_answer(Refused("invalid", _described(cause)))
            raise


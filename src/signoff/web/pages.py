"""The console's pages (GET): the pending requests, a request, incidents, knowledge,
statistics and the watchdogs' findings. Each reads through the service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from signoff import errors
from signoff.lifecycle import RequestStatus, Role, role_allows
from signoff.service import Service
from signoff.web.render import render
from signoff.web.routing import ConsoleRoute, refusal
from signoff.web.security import current_session

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)
PAGE = 50
STATS_DAYS = 14


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _cursor(value: str | None) -> str | None:
    if value is not None and len(value) > 500:
        raise errors.InvalidInput("the cursor is not one this server gave out")
    return value or None


def seconds_left(expires_at: str, now: datetime) -> float:
    return (datetime.fromisoformat(expires_at) - now).total_seconds()


@router.get("/")
async def pending(request: Request, cursor: str | None = None) -> Response:
    """Pending requests, soonest deadline first, with their countdowns."""
    session = await current_session(request)
    page = await _service(request).pending_by_deadline(
        session.principal, limit=PAGE, cursor=_cursor(cursor))
    now = page["now"]
    for item in page["items"]:
        item["seconds_left"] = seconds_left(item["expires_at"], now)
    return render(request, "pending.html", {"page": page, "now": now, "live": "pending"})


def decision_message(req: dict[str, Any], zone_clock: Any) -> str:
    """What won, in words: ``Expired at 09:14:03 Asia/Taipei``, ``Already rejected by bob``."""
    status = req["status"]
    if status == RequestStatus.EXPIRED:
        return f"Expired at {zone_clock(req['expires_at'])}"
    if status == RequestStatus.PENDING:
        return "Still pending"
    by = req["decided_by"] or "someone"
    when = f" at {zone_clock(req['decided_at'])}" if req["decided_at"] else ""
    return f"Already {status} by {by}{when}"


async def request_context(request: Request, request_id: str) -> dict[str, Any]:
    """Everything the request page shows."""
    session = await current_session(request)
    service = _service(request)
    who = session.principal
    req = await service.get_request(who, request_id)
    incident, events, more = await service.request_surroundings(who, req)
    now = datetime.now(UTC)
    named = req.get("approvers") or []
    # Names alone (no group, whose members the service knows) that leave this person out:
    # the page says who may, rather than offering buttons the service would refuse.
    left_out = bool(named) and who.name not in named and not any(
        a.startswith("group:") for a in named)
    may_decide = (req["status"] == RequestStatus.PENDING
                  and role_allows(who.role, Role.APPROVER)
                  and req["requested_by"] != who.name and not left_out)
    return {"req": req, "incident": incident, "events": events,
            "more_events": more, "may_decide": may_decide,
            "seconds_left": seconds_left(req["expires_at"], now), "now": now,
            "live": "request", "live_id": req["id"], "left_out": left_out,
            "voted": any(a["by"] == who.name for a in req["approvals"])}


@router.get("/approvals/{request_id}")
async def approval(request: Request, request_id: str) -> Response:
    context = await request_context(request, request_id)
    return render(request, "request.html", context)


@router.get("/incidents")
async def incidents(request: Request, cursor: str | None = None) -> Response:
    session = await current_session(request)
    page = await _service(request).list_incidents(
        session.principal, limit=50, cursor=_cursor(cursor))
    return render(request, "incidents.html", {"page": page})


@router.get("/incidents/{incident_id}")
async def incident(request: Request, incident_id: str) -> Response:
    session = await current_session(request)
    service = _service(request)
    who = session.principal
    found = await service.get_incident(who, incident_id)
    iid = uuid.UUID(found["id"])
    asked = await service.list_requests(who, incident_id=iid, limit=100)
    events = await service.incident_events(who, incident_id, limit=200)
    knowledge = await service.list_knowledge(who, incident_id=iid, limit=5)
    return render(request, "incident.html", {
        "incident": found, "requests": asked["items"], "events": events["items"],
        "knowledge": knowledge["items"]})


@router.get("/knowledge")
async def knowledge(request: Request, q: str = "") -> Response:
    session = await current_session(request)
    service = _service(request)
    if q.strip():
        found = await service.search_knowledge(session.principal, q.strip())
    else:
        found = (await service.list_knowledge(session.principal, limit=50))["items"]
    return render(request, "knowledge.html", {"q": q, "entries": found})


@router.get("/stats")
async def stats(request: Request) -> Response:
    session = await current_session(request)
    service = _service(request)
    days = await service.daily_endings(
        session.principal, STATS_DAYS, request.app.state.settings.zone)
    totals = await service.stats(session.principal)
    return render(request, "stats.html", {"days": days, "totals": totals})


@router.get("/watchdog")
async def watchdog(request: Request) -> Response:
    await current_session(request)
    checks = await _service(request).watchdog(limit=50)
    return render(request, "watchdog.html", {"checks": [c.as_json() for c in checks]})


async def unknown_page(request: Request, rest: str) -> Response:
    """Any other address under ``/ui/``."""
    return refusal(request, 404, "There is no page at this address.")

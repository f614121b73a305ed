"""The single-use link's page, ``/ui/l/{secret}``: one request, for one person, without a
session. Opening it uses nothing up; its form decides through the service
(``Service.decide_by_link``), which uses the link up in the decision's transaction. A
link used, for a request that has ended, or past its deadline is a page saying why (410);
an unknown one is 404."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response

from signoff import errors
from signoff.lifecycle import RequestStatus
from signoff.service import Service
from signoff.web.forms import decision_body
from signoff.web.pages import seconds_left
from signoff.web.render import clock_time, local_time, render
from signoff.web.routing import ConsoleRoute, read_form, refusal
from signoff.web.security import check_csrf

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)
_CSRF_KEY = b"signoff-link-form"


def link_csrf(secret: str) -> str:
    """The link page's CSRF token: derived from the link's secret, which only its holder
    knows, so a form posted from elsewhere cannot carry it."""
    return hmac.new(_CSRF_KEY, secret.encode(), hashlib.sha256).hexdigest()


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def _page(request: Request, secret: str, *, refused: str | None = None,
                comment: str = "", status: int = 200) -> Response:
    service = _service(request)
    who, req = await service.open_link(secret)
    incident, events, more = await service.request_surroundings(who, req)
    voted = any(a["by"] == who.name for a in req["approvals"])
    return render(request, "request.html", {
        "req": req, "incident": incident, "events": events, "more_events": more,
        "may_decide": req["status"] == RequestStatus.PENDING, "voted": voted,
        "seconds_left": seconds_left(req["expires_at"], datetime.now(UTC)),
        "now": datetime.now(UTC), "left_out": False, "live": "",
        "link_for": who.name, "form_action": f"/ui/l/{secret}", "csrf": link_csrf(secret),
        "refused": refused, "comment": comment,
    }, status=status)


def gone_page(request: Request, gone: errors.LinkGone) -> Response:
    """410, saying why in the display time zone."""
    settings = request.app.state.settings
    when = local_time(gone.at, settings) if gone.at else ""
    if gone.why == "expired":
        message = f"The request expired at {when}: this link no longer works."
    elif gone.why == "ended":
        message = (f"The request was already {gone.status} by {gone.by}"
                   + (f" at {when}" if when else "") + ": this link no longer works.")
    else:
        message = f"This link was used at {when}: it works for one decision only."
    return refusal(request, 410, message)


@router.get("/l/{secret}")
async def open_link(request: Request, secret: str) -> Response:
    try:
        return await _page(request, secret)
    except errors.LinkGone as gone:
        return gone_page(request, gone)


@router.post("/l/{secret}")
async def decide_by_link(request: Request, secret: str) -> Response:
    form = await read_form(request)
    check_csrf(link_csrf(secret), form.get("csrf"))
    choice = form.get("decision")
    if choice not in ("approve", "reject"):
        return await _page(request, secret, refused="Press Approve or Reject.", status=422)
    try:
        out = await _service(request).decide_by_link(
            secret, decision_body(form), approving=choice == "approve")
    except errors.LinkGone as gone:
        return gone_page(request, gone)
    except (errors.InvalidInput, errors.AlreadyApproved, errors.NeedsAnalysis,
            errors.Forbidden) as exc:
        return await _page(request, secret, refused=exc.message,
                           comment=form.get("comment", "")[:20_000], status=exc.http_status)
    settings = request.app.state.settings
    if out["status"] == RequestStatus.PENDING:
        message = (f"Your approval is recorded: {len(out['approvals'])} of "
                   f"{out['required_approvals']} so far.")
    else:
        message = (f"{out['status'].capitalize()} by {out['decided_by']} at "
                   f"{clock_time(out['decided_at'], settings)}.")
    return render(request, "link_done.html", {
        "message": message + " This link is used up now.", "req": out})

"""The console's forms (POST): sign in, sign out, approve or reject. Each works as a
plain HTML form, without script, and each checks its CSRF token before anything else."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from signoff import errors
from signoff.http import describe_validation
from signoff.logs import get_logger
from signoff.schemas import DecisionIn
from signoff.service import Service
from signoff.web.pages import decision_message, request_context
from signoff.web.render import clock_time, render
from signoff.web.routing import ConsoleRoute, read_form, refusal
from signoff.web.security import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SignInLimit,
    check_csrf,
    cookie_options,
    current_session,
)

router = APIRouter(prefix="/ui", route_class=ConsoleRoute, include_in_schema=False)
log = get_logger("signoff.web")
MAX_TOKEN = 200


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _limit(request: Request) -> SignInLimit:
    limit: SignInLimit | None = getattr(request.app.state, "sign_in_limit", None)
    if limit is None:
        limit = request.app.state.sign_in_limit = SignInLimit()
    return limit


def _next(value: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


def login_form(
    request: Request, *, error: str | None = None, status: int = 200, next_page: str = "/ui/"
) -> Response:
    """The sign-in form, with a CSRF token bound to a cookie of its own."""
    token = request.cookies.get(LOGIN_COOKIE, "")
    if not token or len(token) > 100:
        token = secrets.token_urlsafe(32)
    response = render(request, "login.html", {"login_csrf": token, "error": error,
                                              "next": _next(next_page)}, status=status)
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600,
                        **cookie_options(request.app.state.settings))  # type: ignore[arg-type]
    return response


@router.get("/login")
async def login_page(request: Request, next: str = "/ui/") -> Response:
    return login_form(request, next_page=next)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await read_form(request)
    check_csrf(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf"))
    address = request.client.host if request.client else "unknown"
    limit = _limit(request)
    wait = limit.refused(address)
    if wait is not None:
        log.warning("console_sign_in_limited", address=address)
        return refusal(request, 429, "Too many failed sign-ins from this address: wait a "
                                     "minute, then try again.",
                       headers={"Retry-After": str(int(wait) + 1)})
    secret = form.get("token", "").strip()
    settings = request.app.state.settings
    found = None
    if secret and len(secret) <= MAX_TOKEN:
        found = await _service(request).sign_in(secret, settings.session_ttl)
    if found is None:
        limit.failed(address)
        log.info("console_sign_in_refused", address=address)
        return login_form(request, error="That token is unknown or revoked.", status=401,
                          next_page=form.get("next", "/ui/"))
    session, _, principal = found
    log.info("console_signed_in", who=principal.name, role=principal.role.value)
    response = RedirectResponse(_next(form.get("next")), status_code=303)
    response.set_cookie(SESSION_COOKIE, session,
                        max_age=int(settings.session_ttl.total_seconds()),
                        **cookie_options(settings))  # type: ignore[arg-type]
    response.delete_cookie(LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await read_form(request)
    session = await current_session(request)
    check_csrf(session.csrf, form.get("csrf"))
    await _service(request).sign_out(session.secret)
    log.info("console_signed_out", who=session.principal.name)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response


def decision_body(form: dict[str, str]) -> DecisionIn | errors.InvalidInput:
    comment = form.get("comment", "").strip() or None
    try:
        return DecisionIn.model_validate({"comment": comment})
    except ValidationError as exc:
        return errors.InvalidInput(describe_validation(list(exc.errors())))


@router.post("/approvals/{request_id}")
async def decide(request: Request, request_id: str) -> Response:
    """Approve or reject (the button pressed), through the service like the API."""
    form = await read_form(request)
    session = await current_session(request)
    check_csrf(session.csrf, form.get("csrf"))
    choice = form.get("decision")
    service = _service(request)
    body = decision_body(form)
    try:
        if choice == "approve":
            await service.approve(session.principal, request_id, body, via="console")
        elif choice == "reject":
            await service.reject(session.principal, request_id, body, via="console")
        else:
            raise errors.InvalidInput("press Approve or Reject")
    except (errors.Conflict, errors.Forbidden, errors.InvalidInput) as exc:
        context: dict[str, Any] = await request_context(request, request_id)
        settings = request.app.state.settings
        message = exc.message
        if isinstance(exc, errors.RequestNotPending):
            message = decision_message(context["req"], lambda v: clock_time(v, settings))
        context.update(refused=message, comment=form.get("comment", "")[:20_000])
        return render(request, "request.html", context, status=exc.http_status)
    return RedirectResponse(f"/ui/approvals/{request_id}?done={choice}", status_code=303)

"""The console's guards: the security headers on every page, the session cookie, CSRF
tokens, and the limit on failed sign-ins.

The session is kept on the server (``Service.sign_in``): the cookie holds only its secret,
which the database stores hashed. A form carries the session's CSRF token; the sign-in
form, before there is a session, carries one that must match a cookie of its own.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signoff.lifecycle import Principal
from signoff.service import Service
from signoff.settings import Settings

SESSION_COOKIE = "signoff_session"
LOGIN_COOKIE = "signoff_login"
COOKIE_PATH = "/ui"
# Failed sign-ins from one address within ``WINDOW_SECONDS``; the next one is refused.
MAX_FAILURES = 5
WINDOW_SECONDS = 60.0
MAX_ADDRESSES = 10_000


class SecurityHeaders:
    """Every answer under ``/ui`` (and ``/``) gets a Content-Security-Policy with a fresh
    nonce (``request.state.csp_nonce``), ``X-Frame-Options: DENY``, ``nosniff`` and a
    Referrer-Policy. Plain ASGI, like ``CountHTTP``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith("/ui")):
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        policy = (
            "default-src 'none'; "
            f"script-src 'self' 'nonce-{nonce}'; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; font-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        extra = [
            (b"content-security-policy", policy.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if not path.startswith("/ui/static/"):  # pages hold what a session may see
            extra.append((b"cache-control", b"no-store"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((n, v) for n, v in extra if n not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True)
class Session:
    """A signed-in person at a browser."""

    principal: Principal
    csrf: str
    secret: str


class SignInNeeded(Exception):
    """No live session: a page sends the browser to the sign-in form, a form refuses."""


class CsrfRefused(Exception):
    """A form without the CSRF token of its session (or of its sign-in form)."""


async def current_session(request: Request) -> Session:
    """The request's live session; ``SignInNeeded`` without one (also for a session whose
    token was revoked since: it is read with its token, every time)."""
    secret = request.cookies.get(SESSION_COOKIE, "")
    if not secret or len(secret) > 100:
        raise SignInNeeded()
    service: Service = request.app.state.service
    found = await service.session(secret)
    if found is None:
        raise SignInNeeded()
    principal, csrf, _ = found
    request.state.who = principal
    request.state.csrf = csrf
    return Session(principal, csrf, secret)


def check_csrf(expected: str, given: str | None) -> None:
    if not expected or not given or not hmac.compare_digest(expected.encode(),
                                                            given.encode()):
        raise CsrfRefused()


def cookie_options(settings: Settings) -> dict[str, object]:
    return {"httponly": True, "samesite": "strict", "secure": settings.secure_cookies,
            "path": COOKIE_PATH}


class SignInLimit:
    """Failed sign-ins per client address over the last minute, in this process."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and now - times[0] > WINDOW_SECONDS:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def refused(self, address: str) -> float | None:
        """Seconds to wait, once ``MAX_FAILURES`` failed within the window; else None."""
        now = time.monotonic()
        times = self._recent(address, now)
        if len(times) < MAX_FAILURES:
            return None
        return max(WINDOW_SECONDS - (now - times[0]), 1.0)

    def failed(self, address: str) -> None:
        now = time.monotonic()
        if address not in self._failures and len(self._failures) >= MAX_ADDRESSES:
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(address, deque()).append(now)

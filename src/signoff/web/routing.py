"""How the console's routes answer what went wrong: with a page a person can read, never
the API's JSON. Domain errors keep their status codes (403, 404, 409, 422...)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from signoff import errors
from signoff.web.render import render
from signoff.web.security import CsrfRefused, SignInNeeded

TITLES = {400: "Bad request", 401: "Sign in needed", 403: "Refused", 404: "Not found",
          409: "Too late", 410: "Gone", 413: "Too large", 422: "Not accepted",
          429: "Too many attempts", 503: "Unavailable"}


def refusal(
    request: Request, status: int, message: str, *, headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A readable page for a refusal, with its status code."""
    return render(request, "refusal.html", {
        "status": status, "title": TITLES.get(status, "Refused"), "message": message, **extra,
    }, status=status, headers=headers)


class ConsoleRoute(APIRoute):
    """A route whose refusals are pages: no session sends a page to the sign-in form (a
    form is refused with 403), a domain error shows its message with its status."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                if request.method in ("GET", "HEAD"):
                    target = request.url.path
                    if request.url.query:
                        target += "?" + request.url.query
                    return RedirectResponse("/ui/login?next=" + quote(target, safe=""),
                                            status_code=303)
                return refusal(request, 403, "Your session has ended or is not valid: "
                                             "sign in again, then repeat what you did.")
            except CsrfRefused:
                return refusal(request, 403, "This form is out of date or was not sent by "
                                             "this console (its CSRF token does not match). "
                                             "Nothing was changed; reload the page and try "
                                             "again.")
            except errors.SignoffError as exc:
                return refusal(request, exc.http_status, exc.message)
            except RequestValidationError:
                return refusal(request, 422, "The address has a value this page cannot use.")

        return guarded


async def read_form(request: Request, limit: int = 1024 * 1024) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each)."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    raw = await request.body()
    if len(raw) > limit:
        raise errors.InvalidInput("the form is too large")
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise errors.InvalidInput("send the form as application/x-www-form-urlencoded")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise errors.InvalidInput("the form is not UTF-8") from None
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}

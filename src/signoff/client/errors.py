"""What the client raises: a refusal by the server, an unreachable server, and a request
that ended without approval."""

from __future__ import annotations

from typing import Any

import httpx


class SignoffError(Exception):
    """The server refused a call: ``status`` is the HTTP status, ``code`` and ``message``
    come from its ``{"error": {...}}`` answer. A conflict (409) also says the request's or
    incident's status now, in ``current_status``."""

    def __init__(
        self, status: int | None, code: str, message: str, *, current_status: str | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.current_status = current_status
        super().__init__(f"{code}: {message}")


class Unreachable(SignoffError):
    """The server could not be reached, or the connection broke before its answer:
    ``status`` is None and ``code`` is ``unreachable``."""

    def __init__(self, url: str, cause: Exception) -> None:
        reason = str(cause) or type(cause).__name__
        super().__init__(None, "unreachable", f"cannot reach signoff at {url}: {reason}")


def refusal(response: httpx.Response) -> SignoffError:
    """The error an answer of 400 or more stands for."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
        current = error.get("status")
    except (ValueError, KeyError, TypeError):  # not signoff's answer (a proxy's page?)
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return SignoffError(response.status_code, f"http_{response.status_code}", text)
    return SignoffError(response.status_code, code, " ".join(message.split()),
                        current_status=None if current is None else str(current))


def is_transient(exc: SignoffError) -> bool:
    """A failure that may pass by itself: the server restarting, a proxy between."""
    return isinstance(exc, Unreachable) or exc.status in (502, 503, 504)


class NotApproved(Exception):
    """A gate's request ended without approval; ``request`` is the request as it ended."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        status, by = request.get("status"), request.get("decided_by")
        said = f"{request.get('action')!r}"
        if status == "expired":
            said += f" expired at {request.get('expires_at')} with no decision"
        else:
            said += f" was {status}" + (f" by {by}" if by else "")
        if request.get("decision_comment"):
            said += f": {request['decision_comment']}"
        super().__init__(said)


class Rejected(NotApproved):
    """A person rejected the request."""


class Expired(NotApproved):
    """Nobody decided before the request's deadline."""


class Cancelled(NotApproved):
    """The request was withdrawn, or its incident was resolved first."""


ENDINGS: dict[str, type[NotApproved]] = {
    "rejected": Rejected, "expired": Expired, "cancelled": Cancelled,
}


def approved_or_raise(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` when it is approved; else the ``NotApproved`` that says how it ended."""
    status = request.get("status")
    if status == "approved":
        return request
    ending = ENDINGS.get(str(status))
    if ending is None:
        raise SignoffError(None, "still_pending", f"request {request.get('id')} is {status}")
    raise ending(request)


def json_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful answer; a refusal raises ``SignoffError``."""
    if response.status_code >= 400:
        raise refusal(response)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SignoffError(response.status_code, "bad_answer",
                           "the server's answer is not a JSON object")
    return body


def failure_detail(exc: BaseException) -> str:
    """What an outcome report says of the exception that failed the action."""
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:20_000]

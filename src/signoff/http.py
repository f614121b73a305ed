"""The HTTP edge: authentication, body parsing, the error format, size limits.

Domain errors become HTTP answers here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signoff import errors
from signoff.lifecycle import Principal, Role, role_allows
from signoff.logs import get_logger
from signoff.service import Service

log = get_logger("signoff.http")
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
MAX_BODY = 1024 * 1024
# h11 takes any token as a method: any other is counted as "other", so that made-up
# methods cannot add metric series (kept for the process's life) without bound.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(exc: errors.SignoffError) -> JSONResponse:
    extra = {"status": exc.status} if exc.status is not None else {}
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse(
        error_body(exc.code, exc.message, **extra), status_code=exc.http_status, headers=headers
    )


def describe_validation(errs: list[Any]) -> str:
    """One readable sentence from pydantic's error list."""
    parts = []
    for err in errs[:5]:
        if err.get("type") == "json_invalid":
            return "the body is not valid JSON"
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid input"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.SignoffError)
    async def _domain(_: Request, exc: errors.SignoffError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse(
            error_body("invalid", describe_validation(errs), details=errs), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it could not decode (a number too long to read,
            # nesting too deep): to clients, bad content like any other.
            return JSONResponse(
                error_body("invalid", "the body could not be read as JSON"), status_code=422
            )
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return JSONResponse(
            error_body(codes.get(exc.status_code, "error"), str(exc.detail)),
            status_code=exc.status_code,
        )

    @app.exception_handler(OperationalError)
    async def _unavailable(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database_unavailable", error=str(exc.orig))
        return JSONResponse(
            error_body("unavailable", "the database is unavailable; try again"),
            status_code=503, headers={"Retry-After": "1"},
        )

    @app.exception_handler(OSError)
    async def _unreachable(_: Request, exc: OSError) -> JSONResponse:
        # A new pool connection that cannot be made (the server is down or restarting)
        # surfaces as the socket's own error, not wrapped by the driver.
        log.warning("database_unavailable", error=repr(exc))
        return JSONResponse(
            error_body("unavailable", "the database is unavailable; try again"),
            status_code=503, headers={"Retry-After": "1"},
        )

    @app.exception_handler(PoolTimeout)
    async def _busy(_: Request, exc: PoolTimeout) -> JSONResponse:
        # An overload, not a fault: no traceback, which under load would add to it.
        log.warning("database_pool_exhausted", error=str(exc).split(". ", 1)[0])
        return JSONResponse(
            error_body("unavailable", "the server is busy: no database connection came "
                                      "free in time; try again"),
            status_code=503, headers={"Retry-After": "1"},
        )

    @app.exception_handler(DBAPIError)
    async def _dbapi(_: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database_error", error=str(exc.orig))
        return JSONResponse(
            error_body("unavailable", "the database refused the operation; try again"),
            status_code=503, headers={"Retry-After": "1"},
        )


class BodyLimit:
    """Refuse bodies over 1 MiB with 413, whether or not they announce their length."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope.get("path", "").startswith("/ui/")  # a person's form: a page says why
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send, page)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._refuse(send, page)

    @staticmethod
    async def _refuse(send: Send, page: bool = False) -> None:
        body = json.dumps(error_body("too_large", "the body is larger than 1 MiB")).encode()
        kind = b"application/json"
        if page:
            body = (b"<!doctype html><title>Too large</title><h1>Too large</h1><p>What was "
                    b"sent is larger than 1 MiB: nothing was changed.</p>")
            kind = b"text/html; charset=utf-8"
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", kind),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class CountHTTP:
    """Count every answer by method, route template and status, and answer what no
    handler did: an unexpected error gets the JSON error shape with a request id that its
    log line (with the traceback) carries too; a client gone before the answer counts as
    499, nginx's "client closed request".

    Plain ASGI: it only watches the response start go by, so a call costs a dictionary
    look-up, not the task and the streams that a ``BaseHTTPMiddleware`` adds to it. It
    must be the outermost of the app's own middlewares, so that it sees every answer.
    """

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter
        self._children: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching)
        except ClientDisconnect:
            status = status or CLIENT_CLOSED
        except Exception as exc:  # the last handler: answer and log it
            request_id = _request_id(scope)
            log.error("unhandled_error", request_id=request_id, method=scope["method"],
                      path=scope.get("path"), exc_info=exc)
            if not status:  # else the answer is cut short: the server closes the connection
                status = 500
                await _internal_error(send, request_id)
        finally:
            if status:
                self._count(scope, status)

    def _count(self, scope: Scope, status: int) -> None:
        # The router has put the matched route in the scope by now.
        path = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"] if scope["method"] in _METHODS else "other"
        key = (method, path, status)
        child = self._children.get(key)
        if child is None:
            child = self.counter.labels(key[0], path, str(status))
            if len(self._children) < 10_000:
                self._children[key] = child
        child.inc()


CLIENT_CLOSED = 499
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is a sane one, else a new one."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


async def _internal_error(send: Send, request_id: str) -> None:
    body = json.dumps(error_body(
        "internal", "the server failed to answer; the request id leads to its log line",
        request_id=request_id,
    )).encode()
    await send({"type": "http.response.start", "status": 500,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-request-id", request_id.encode())]})
    await send({"type": "http.response.body", "body": body})


# -- authentication -------------------------------------------------------------------


async def authorize(request: Request, role: Role) -> Principal:
    """The caller's principal, if its bearer token grants ``role``: 401 or 403 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if not header:
        raise errors.Unauthenticated()
    if scheme.lower() != "bearer" or not secret:
        raise errors.Unauthenticated(
            "A valid bearer token is required: the Authorization header must be "
            "Bearer <token>")
    service: Service = request.app.state.service
    found = await service.authenticate(secret)
    if found is None:
        raise errors.Unauthenticated(
            "A valid bearer token is required: this one is unknown or revoked")
    if not role_allows(found.role, role):
        raise errors.Forbidden(f"this needs the {role.value} role; the token is {found.role}")
    return found


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """``authorize`` as a dependency, for routes whose query FastAPI validates: it runs
    first, so that who is refused before what was asked."""

    async def dependency(request: Request) -> Principal:
        return await authorize(request, role)

    return dependency


# -- parsing --------------------------------------------------------------------------


def parse_filter_id(value: str | None, name: str) -> uuid.UUID | None:
    """An id in a query filter: a malformed one is a bad filter value (422)."""
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise errors.InvalidInput(f"{name}: not a UUID") from None


async def read_body(request: Request, model: type[M]) -> M | errors.InvalidInput:
    """The body as ``model``, or the error to raise once who/what/state have been checked."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return errors.InvalidInput("the body is not valid JSON" + _sent_as(request))
    except ValueError:  # a number longer than Python converts
        return errors.InvalidInput("the body has a number too long to read")
    except RecursionError:
        return errors.InvalidInput("the body is nested too deeply to read")
    if not isinstance(data, dict):
        return errors.InvalidInput("the body must be a JSON object" + _sent_as(request))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return errors.InvalidInput(describe_validation(list(exc.errors())))


def _sent_as(request: Request) -> str:
    """A hint for a body that is not JSON and was not sent as JSON (curl's ``-d`` sends a
    form): name the header to send. A JSON body is taken whatever its Content-Type."""
    header: str = request.headers.get("content-type", "")
    kind = header.partition(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        return ""
    sent = f"as {kind}" if kind else "with no Content-Type"
    return f" (it was sent {sent}: send JSON, with Content-Type: application/json)"


async def unless_gone(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientDisconnect`` (and ``work`` cancelled) as soon as the
    client closes its connection: a long wait leaves nothing behind its caller."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled from outside (the server is going)
        task.cancel()
        gone.cancel()
        raise
    gone.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnect()
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def body_or_raise(parsed: M | errors.InvalidInput) -> M:
    if isinstance(parsed, errors.InvalidInput):
        raise parsed
    return parsed

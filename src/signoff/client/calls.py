"""The calls both clients make, built without I/O: which route, which body, when a wait
polls again, retries or gives up, and how a decorated call is described to people."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import reprlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from enum import Enum
from typing import Any, TypedDict
from urllib.parse import quote

from signoff import __version__
from signoff.client.errors import SignoffError, is_transient

DEFAULT_URL = "http://127.0.0.1:8700"
MAX_WAIT = 60.0  # the longest long-poll the server takes
# Without a timeout, a wait keeps retrying an unreachable server this long past the
# request's deadline (clocks differ); by then the request can only read as ended.
RETRY_GRACE = 60.0
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 5.0
MAX_ACTION = 1_000


class RequestOptions(TypedDict, total=False):
    """The options of ``request`` that ``gate`` and ``requires_approval`` pass on."""

    incident_id: str | None
    fingerprint: str | None
    risk: str | None
    rationale: str | None
    ttl: float | timedelta | None
    required_approvals: int | None
    approvers: list[str] | None
    callback_url: str | None
    idempotency_key: str | None


@dataclass(frozen=True)
class Call:
    """One HTTP call to the API; ``wait`` is how long the server may hold it."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    query: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    wait: float = 0.0


def base_url(url: str | None) -> str:
    """The server's URL: given, else ``SIGNOFF_URL``, else the default."""
    found = (url or os.environ.get("SIGNOFF_URL") or DEFAULT_URL).strip().rstrip("/")
    if not found.startswith(("http://", "https://")):
        raise ValueError(f"{found!r} is not an http:// or https:// URL")
    return found


def headers(token: str | None) -> dict[str, str]:
    """Every call's headers: the bearer token, given or ``SIGNOFF_TOKEN``."""
    found = token or os.environ.get("SIGNOFF_TOKEN")
    out = {"User-Agent": f"signoff-client/{__version__}", "Accept": "application/json"}
    if found:
        out["Authorization"] = f"Bearer {found.strip()}"
    return out


def ttl_seconds(ttl: float | timedelta) -> int:
    """Whole seconds for ``ttl_seconds``, rounded up: a deadline is never shorter than asked."""
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    return math.ceil(seconds)


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _id(value: str) -> str:
    return quote(str(value), safe="")


def create_incident(
    title: str, severity: str, *, service: str | None, source: str | None,
    fingerprint: str | None, labels: Mapping[str, Any] | None, description: str | None,
) -> Call:
    return Call("POST", "/incidents", _given(
        title=title, severity=severity, service=service, source=source,
        fingerprint=fingerprint, labels=None if labels is None else dict(labels),
        description=description))


def create_request(
    action: str, *, incident_id: str | None = None, fingerprint: str | None = None,
    risk: str | None = None, params: Mapping[str, Any] | None = None,
    rationale: str | None = None, ttl: float | timedelta | None = None,
    required_approvals: int | None = None, approvers: list[str] | None = None,
    callback_url: str | None = None, idempotency_key: str | None = None,
) -> Call:
    body = _given(
        action=action, incident_id=incident_id, fingerprint=fingerprint, risk=risk,
        params=None if params is None else dict(params), rationale=rationale,
        ttl_seconds=None if ttl is None else ttl_seconds(ttl),
        required_approvals=required_approvals,
        approvers=None if approvers is None else list(approvers), callback_url=callback_url)
    extra = None if idempotency_key is None else {"Idempotency-Key": idempotency_key}
    return Call("POST", "/approvals", body, headers=extra)


def get_request(request_id: str, wait: float = 0.0) -> Call:
    query = {"wait": f"{wait:.3f}"} if wait > 0 else None
    return Call("GET", f"/approvals/{_id(request_id)}", query=query, wait=wait)


def list_requests(
    status: str | None, incident_id: str | None, limit: int | None, cursor: str | None
) -> Call:
    query = _given(status=status, incident_id=incident_id,
                   limit=None if limit is None else str(limit), cursor=cursor)
    return Call("GET", "/approvals", query=query)


def list_knowledge(
    incident_id: str | None, service: str | None, fingerprint: str | None,
    limit: int | None, cursor: str | None,
) -> Call:
    query = _given(incident_id=incident_id, service=service, fingerprint=fingerprint,
                   limit=None if limit is None else str(limit), cursor=cursor)
    return Call("GET", "/knowledge", query=query)


def decide(request_id: str, verb: str, comment: str | None) -> Call:
    return Call("POST", f"/approvals/{_id(request_id)}/{verb}", _given(comment=comment))


def cancel(request_id: str) -> Call:
    return Call("POST", f"/approvals/{_id(request_id)}/cancel")


def report_outcome(request_id: str, succeeded: bool, detail: str | None) -> Call:
    body = _given(succeeded=bool(succeeded), detail=detail)
    return Call("POST", f"/approvals/{_id(request_id)}/outcome", body)


def policy() -> Call:
    return Call("GET", "/policy")


def policy_shadow(since: str | None, until: str | None) -> Call:
    return Call("GET", "/policy/shadow", query=_given(since=since, until=until))


def pause_policy(reason: str) -> Call:
    return Call("POST", "/policy/pause", {"reason": reason})


def resume_policy() -> Call:
    return Call("POST", "/policy/resume")


class Waiting:
    """The plan of one ``wait``: a plain read first, then long-polls of at most
    ``MAX_WAIT`` until the request ends or ``timeout`` passes; an unreachable server or a
    503 is retried with backoff until the timeout (without one: until the request's
    deadline, plus ``RETRY_GRACE``, since after it the request can only read as ended)."""

    def __init__(
        self, timeout: float | timedelta | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        now = clock()
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.end = None if seconds is None else now + max(0.0, seconds)
        self.retry_until = now + RETRY_GRACE  # until a reading tells the deadline
        self.delay = BACKOFF_FIRST
        self.answered_once = False

    def poll(self) -> float:
        """Seconds the next read may be held by the server."""
        if not self.answered_once:
            return 0.0
        if self.end is None:
            return MAX_WAIT
        return max(0.0, min(MAX_WAIT, self.end - self.clock()))

    def done(self, reading: dict[str, Any]) -> bool:
        """Whether ``reading`` is the answer: the request ended, or the time is up."""
        self.answered_once = True
        self.delay = BACKOFF_FIRST
        if reading.get("status") != "pending":
            return True
        if self.end is not None:
            return self.clock() >= self.end
        try:
            deadline = datetime.fromisoformat(str(reading["expires_at"]))
            left = (deadline - datetime.now(UTC)).total_seconds()
        except (KeyError, ValueError, TypeError):
            left = 0.0
        self.retry_until = self.clock() + max(0.0, left) + RETRY_GRACE
        return False

    def pause(self, exc: SignoffError) -> float:
        """Seconds to sleep before trying again after ``exc``; raises it when it is not
        worth retrying or the time is up."""
        if not is_transient(exc):
            raise exc
        limit = self.end if self.end is not None else self.retry_until
        left = limit - self.clock()
        if left <= 0:
            raise exc
        pause = min(self.delay, left)
        self.delay = min(self.delay * 2, BACKOFF_MAX)
        return pause


# -- describing a decorated call -------------------------------------------------------

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 8
_MAX_DEPTH = 32


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can carry it: containers as lists and objects, times as RFC 3339,
    enums as their value, anything else as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth >= _MAX_DEPTH:
        return repr(value)
    if isinstance(value, Enum):
        return json_safe(value.value, depth + 1)
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value), depth + 1)
    return str(value)


def describe_call(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The action and params of a call: ``restart_pod(name='web-1')`` and
    ``{"name": "web-1"}``, defaults included. A method's ``self`` or ``cls`` is left out."""
    signature = inspect.signature(fn)
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    parameters = list(signature.parameters.values())
    skip = parameters[0].name if parameters and parameters[0].name in ("self", "cls") else None
    # Parameters up to a filled *args are shown by position, so the text reads as a call.
    star = next((i for i, p in enumerate(parameters)
                 if p.kind is p.VAR_POSITIONAL and bound.arguments.get(p.name)), -1)
    shown: list[str] = []
    params: dict[str, Any] = {}
    for i, p in enumerate(parameters):
        if p.name == skip or p.name not in bound.arguments:
            continue
        value = bound.arguments[p.name]
        if p.kind is p.VAR_KEYWORD:  # as they were passed: by name
            params.update((k, json_safe(v)) for k, v in value.items())
            shown += [f"{k}={_short.repr(v)}" for k, v in value.items()]
            continue
        params[p.name] = json_safe(value)
        if p.kind is p.VAR_POSITIONAL:
            shown += [_short.repr(v) for v in value]
        elif p.kind is p.POSITIONAL_ONLY or i < star:
            shown.append(_short.repr(value))
        else:
            shown.append(f"{p.name}={_short.repr(value)}")
    action = f"{getattr(fn, '__name__', 'call')}({', '.join(shown)})"
    if len(action) > MAX_ACTION:
        action = action[: MAX_ACTION - 1] + "…"
    return action, params

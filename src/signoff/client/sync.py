"""The blocking client: ``Client``."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, ParamSpec, Self, TypeVar, Unpack

import httpx

from signoff.client import calls
from signoff.client.errors import (
    SignoffError,
    Unreachable,
    approved_or_raise,
    failure_detail,
    json_of,
)

P = ParamSpec("P")
R = TypeVar("R")
Request = dict[str, Any]


class Client:
    """signoff's HTTP API at ``url`` (default ``SIGNOFF_URL``, else
    ``http://127.0.0.1:8700``) with ``token`` (default ``SIGNOFF_TOKEN``). Each method
    returns the API's JSON as a dict; a refusal raises ``SignoffError``, an unreachable
    server ``Unreachable`` (a ``SignoffError`` with code ``unreachable``). ``timeout`` is
    how long one call may take, beyond the time a long-poll is allowed to wait."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0
    ) -> None:
        self.url = calls.base_url(url)
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url + "/api/v1", headers=calls.headers(token))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, call: calls.Call) -> Request:
        try:
            response = self._http.request(
                call.method, call.path, json=call.body, params=call.query,
                headers=call.headers, timeout=self.timeout + call.wait,
            )
        except httpx.TransportError as exc:
            raise Unreachable(self.url, exc) from exc
        return json_of(response)

    def create_incident(
        self, title: str, severity: str, *, service: str | None = None,
        source: str | None = None, fingerprint: str | None = None,
        labels: Mapping[str, Any] | None = None, description: str | None = None,
    ) -> Request:
        """Open an incident; with the fingerprint of an open one, that one is returned."""
        return self._send(calls.create_incident(
            title, severity, service=service, source=source, fingerprint=fingerprint,
            labels=labels, description=description))

    def request(
        self, action: str, *, incident_id: str | None = None, fingerprint: str | None = None,
        risk: str | None = None, params: Mapping[str, Any] | None = None,
        rationale: str | None = None, ttl: float | timedelta | None = None,
        required_approvals: int | None = None, approvers: list[str] | None = None,
        callback_url: str | None = None, idempotency_key: str | None = None,
    ) -> Request:
        """Ask for sign-off on ``action``; ``ttl`` in seconds or a timedelta. Only the
        options given are sent; the server applies its defaults to the rest."""
        return self._send(calls.create_request(
            action, incident_id=incident_id, fingerprint=fingerprint, risk=risk,
            params=params, rationale=rationale, ttl=ttl,
            required_approvals=required_approvals, approvers=approvers,
            callback_url=callback_url, idempotency_key=idempotency_key))

    def get(self, request_id: str) -> Request:
        return self._send(calls.get_request(request_id))

    def wait(
        self, request_id: str, timeout: float | timedelta | None = None, *,
        on_answer: Callable[[Request], None] | None = None,
        on_retry: Callable[[SignoffError, float], None] | None = None,
    ) -> Request:
        """The request once it is no longer pending, or as it is when ``timeout`` seconds
        have passed (still ``pending`` then). Long-polls of at most 60 s; an unreachable
        server or a 503 is retried with backoff until the timeout (without one, until a
        minute past the request's deadline), then raised. ``on_answer`` sees each reading,
        ``on_retry`` each failure retried and the seconds until the next try."""
        plan = calls.Waiting(timeout)
        while True:
            try:
                reading = self._send(calls.get_request(request_id, plan.poll()))
            except SignoffError as exc:
                pause = plan.pause(exc)
                if on_retry is not None:
                    on_retry(exc, pause)
                time.sleep(pause)
                continue
            if on_answer is not None:
                on_answer(reading)
            if plan.done(reading):
                return reading

    def approve(self, request_id: str, comment: str | None = None) -> Request:
        return self._send(calls.decide(request_id, "approve", comment))

    def reject(self, request_id: str, comment: str | None = None) -> Request:
        return self._send(calls.decide(request_id, "reject", comment))

    def cancel(self, request_id: str) -> Request:
        return self._send(calls.cancel(request_id))

    def report_outcome(
        self, request_id: str, succeeded: bool, detail: str | None = None
    ) -> Request:
        return self._send(calls.report_outcome(request_id, succeeded, detail))

    def list_requests(
        self, status: str | None = None, *, incident_id: str | None = None,
        limit: int | None = None, cursor: str | None = None,
    ) -> Request:
        """A page of requests, newest first: ``{"items": [...], "next_cursor": ...}``."""
        return self._send(calls.list_requests(status, incident_id, limit, cursor))

    def policy(self) -> Request:
        """The server's policy: its rules, a broken file's error, and whether it is paused."""
        return self._send(calls.policy())

    def policy_shadow(self, since: str | None = None, until: str | None = None) -> Request:
        """Each rule's verdicts against people's decisions over requests that ended in
        ``[since, until)`` (RFC 3339 times)."""
        return self._send(calls.policy_shadow(since, until))

    def pause_policy(self, reason: str) -> Request:
        """Stop all auto-approval (admin)."""
        return self._send(calls.pause_policy(reason))

    def resume_policy(self) -> Request:
        """Let the policy approve again (admin)."""
        return self._send(calls.resume_policy())

    def list_knowledge(
        self, *, incident_id: str | None = None, service: str | None = None,
        fingerprint: str | None = None, limit: int | None = None, cursor: str | None = None,
    ) -> Request:
        """A page of knowledge entries, newest first."""
        return self._send(calls.list_knowledge(incident_id, service, fingerprint, limit, cursor))

    def _decided(self, made: Request, within: float | timedelta | None) -> Request:
        """The approved request, or ``NotApproved``. A request still pending when
        ``within`` runs out is withdrawn, so that nobody approves what will not run."""
        final = made if made["status"] != "pending" else self.wait(made["id"], within)
        if final["status"] == "pending":
            try:
                final = self.cancel(final["id"])
            except SignoffError as exc:
                if exc.status != 409:  # else decided meanwhile: that decision stands
                    raise
                final = self.get(final["id"])
        return approved_or_raise(final)

    @contextmanager
    def gate(
        self, action: str, *, params: Mapping[str, Any] | None = None,
        timeout: float | timedelta | None = None, **options: Unpack[calls.RequestOptions],
    ) -> Iterator[Request]:
        """Ask for ``action``, wait, and enter only once it is approved (else raise
        ``Rejected``, ``Expired`` or ``Cancelled``). A normal exit reports the outcome as
        succeeded; an exception reports it failed, with the exception's text, and goes on."""
        approved = self._decided(self.request(action, params=params, **options), timeout)
        try:
            yield approved
        except BaseException as exc:
            try:
                self.report_outcome(approved["id"], False, failure_detail(exc))
            except SignoffError as lost:
                exc.add_note(f"reporting the failed outcome to signoff failed too: {lost}")
            raise
        self.report_outcome(approved["id"], True)

    def requires_approval(
        self, *, timeout: float | timedelta | None = None,
        **options: Unpack[calls.RequestOptions],
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Run each call of the decorated function through ``gate``: the action is the
        call as text (``restart_pod(name='web-1')``), the params its arguments."""

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(fn):
                raise TypeError(f"{fn.__name__} is a coroutine function: use AsyncClient")

            @functools.wraps(fn)
            def gated(*args: P.args, **kwargs: P.kwargs) -> R:
                action, params = calls.describe_call(fn, args, kwargs)
                with self.gate(action, params=params, timeout=timeout, **options):
                    return fn(*args, **kwargs)

            return gated

        return decorate

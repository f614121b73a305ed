"""The ``signoff`` commands that talk to a server over HTTP: ``incident create``, ``request
create|list|show|wait|cancel|outcome``, ``approve`` and ``reject``.

They are built on ``signoff.client``, at ``SIGNOFF_URL`` with ``SIGNOFF_TOKEN`` (or
``--url``, ``--token``), and never read the server's settings or open a database. Exit
codes: 1 for an error (unreachable, or refused: one line on stderr), 2 for bad usage, and
for the commands that wait, the request's ending (``WAIT_EXITS``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any

import typer

from signoff.cli_views import Countdown, print_incident, print_request, print_requests
from signoff.client import Client, SignoffError
from signoff.durations import parse_duration
from signoff.lifecycle import RequestStatus, Risk, Severity

WAIT_EXITS = {"approved": 0, "rejected": 10, "expired": 11, "cancelled": 12, "pending": 13}

incident_app = typer.Typer(help="Incidents, on a signoff server.", no_args_is_help=True)
request_app = typer.Typer(help="Approval requests, on a signoff server.", no_args_is_help=True)


def add_client_commands(app: typer.Typer) -> None:
    """Register the HTTP client's commands on the ``signoff`` command."""
    app.add_typer(incident_app, name="incident")
    app.add_typer(request_app, name="request")
    app.command("approve")(approve)
    app.command("reject")(reject)


def _duration(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _param(value: str) -> tuple[str, Any]:
    """``KEY=VALUE``: the value as JSON when it reads as JSON, else as text."""
    key, sep, raw = value.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"{value!r} is not KEY=VALUE")
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw
    return key.strip(), parsed


Url = Annotated[str | None, typer.Option(
    "--url", envvar="SIGNOFF_URL", show_default=False,
    help="The server's URL (default: http://127.0.0.1:8700).")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar="SIGNOFF_TOKEN", show_default=False, help="An API token.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
Timeout = Annotated[timedelta | None, typer.Option(
    parser=_duration, metavar="DURATION", show_default=False,
    help="Stop waiting after this long (90s, 10m, 2h, 1d or seconds) and exit 13 "
         "(default: until the request ends).")]
RequestId = Annotated[str, typer.Argument(
    metavar="ID", help="The request's id.", show_default=False)]


def _fail(exc: SignoffError) -> typer.Exit:
    """The server's refusal (or its absence) as one line on stderr, and exit code 1."""
    now = f" (now {exc.current_status})" if exc.current_status else ""
    print(f"signoff: {exc.code}: {' '.join(exc.message.split())}{now}", file=sys.stderr)
    return typer.Exit(1)


@contextmanager
def client_for(url: str | None, token: str | None) -> Iterator[Client]:
    """A client of the server, turning its refusals into one line on stderr and exit 1."""
    try:
        client = Client(url, token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--url'") from None
    try:
        with client:
            yield client
    except SignoffError as exc:
        raise _fail(exc) from None


def _emit(data: dict[str, Any], as_json: bool, kind: str = "request") -> None:
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif kind == "incident":
        print_incident(data)
    else:
        print_request(data)


def _wait(client: Client, made: dict[str, Any], timeout: timedelta | None) -> dict[str, Any]:
    """Wait for the request to end, with a countdown when a person watches stderr, and a
    word on stderr while the server cannot be reached."""
    countdown = Countdown(made, None if timeout is None
                          else time.monotonic() + timeout.total_seconds())

    def retrying(exc: SignoffError, pause: float) -> None:
        if not countdown.retrying:
            countdown.say(f"signoff: {exc.message}; retrying with backoff")
        countdown.retrying = True

    def answered(reading: dict[str, Any]) -> None:
        if countdown.retrying:
            countdown.say("signoff: the server answers again")
        countdown.retrying = False
        countdown.reading = reading

    with countdown.shown():
        return client.wait(made["id"], timeout, on_answer=answered, on_retry=retrying)


def _finish(final: dict[str, Any], as_json: bool) -> None:
    _emit(final, as_json)
    code = WAIT_EXITS.get(str(final.get("status")), 1)
    if code:
        raise typer.Exit(code)


@incident_app.command("create")
def incident_create(
    title: Annotated[str, typer.Option(help="What is wrong.", show_default=False)],
    severity: Annotated[Severity, typer.Option(help="critical, high, medium, low or info.",
                                               show_default=False)],
    service: Annotated[str | None, typer.Option(help="The service affected.")] = None,
    fingerprint: Annotated[str | None, typer.Option(
        help="Identifies the problem: an open incident with it is returned, not doubled.")
    ] = None,
    url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Open an incident (or find the open one with the same fingerprint)."""
    with client_for(url, token) as client:
        made = client.create_incident(title, severity.value, service=service,
                                      fingerprint=fingerprint)
    _emit(made, as_json, "incident")


@request_app.command("create")
def request_create(
    action: Annotated[str, typer.Argument(
        metavar="ACTION", help="The action to approve, as people read it.",
        show_default=False)],
    incident: Annotated[str | None, typer.Option(help="The incident's id.")] = None,
    fingerprint: Annotated[str | None, typer.Option(
        help="The open incident with this fingerprint (instead of --incident).")] = None,
    risk: Annotated[Risk | None, typer.Option(
        help="low, medium, high or critical (default: medium).", show_default=False)] = None,
    ttl: Annotated[timedelta | None, typer.Option(
        parser=_duration, metavar="DURATION", show_default=False,
        help="Deadline: 90s, 10m, 2h, 1d or seconds (default: the server's).")] = None,
    param: Annotated[list[str] | None, typer.Option(
        metavar="KEY=VALUE", show_default=False,
        help="A parameter of the action, repeatable; VALUE is JSON if it reads as JSON, "
             "else text.")] = None,
    rationale: Annotated[str | None, typer.Option(help="Why the action is needed.")] = None,
    approvals: Annotated[int | None, typer.Option(
        min=1, show_default=False, help="Approvals needed (default: 1).")] = None,
    approver: Annotated[list[str] | None, typer.Option(
        metavar="NAME|group:NAME", show_default=False,
        help="Who may decide, repeatable (default: any approver).")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        help="Asking again with the same key and options gives the same request.")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Wait for the decision; the exit code says how it ended.")] = False,
    timeout: Timeout = None,
    url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Ask for sign-off on ACTION; with --wait, wait for the decision."""
    if incident is not None and fingerprint is not None:
        raise typer.BadParameter("give --incident or --fingerprint, not both",
                                 param_hint="'--fingerprint'")
    if timeout is not None and not wait:
        raise typer.BadParameter("--timeout needs --wait", param_hint="'--timeout'")
    params = dict(_param(p) for p in param) if param else None
    with client_for(url, token) as client:
        made = client.request(
            action, incident_id=incident, fingerprint=fingerprint,
            risk=None if risk is None else risk.value, params=params, rationale=rationale,
            ttl=None if ttl is None else math.ceil(ttl.total_seconds()),
            required_approvals=approvals, approvers=approver,
            idempotency_key=idempotency_key)
        if not wait:
            _emit(made, as_json)
            return
        print(f"signoff: request {made['id']} is {made['status']}", file=sys.stderr)
        final = _wait(client, made, timeout)
    _finish(final, as_json)


@request_app.command("list")
def request_list(
    status: Annotated[RequestStatus | None, typer.Option(help="Only requests in this status.",
                                                         show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 50,
    url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """List requests, newest first."""
    with client_for(url, token) as client:
        page = client.list_requests(None if status is None else status.value, limit=limit)
    if as_json:
        print(json.dumps(page, indent=2, ensure_ascii=False))
    else:
        print_requests(page["items"])


@request_app.command("show")
def request_show(
    request_id: RequestId, url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Show one request."""
    with client_for(url, token) as client:
        found = client.get(request_id)
    _emit(found, as_json)


@request_app.command("wait")
def request_wait(
    request_id: RequestId, timeout: Timeout = None,
    url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Wait until the request ends; exit 0 approved, 10 rejected, 11 expired, 12 cancelled,
    13 still pending at --timeout."""
    with client_for(url, token) as client:
        final = _wait(client, {"id": request_id}, timeout)
    _finish(final, as_json)


@request_app.command("cancel")
def request_cancel(
    request_id: RequestId, url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Withdraw a pending request (its requester only)."""
    with client_for(url, token) as client:
        done = client.cancel(request_id)
    _emit(done, as_json)


@request_app.command("outcome")
def request_outcome(
    request_id: RequestId,
    succeeded: Annotated[bool, typer.Option(
        "--succeeded/--failed", show_default=False, help="How the approved action went.")],
    detail: Annotated[str | None, typer.Option(help="What happened.")] = None,
    url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Report how an approved action went (its requester only)."""
    with client_for(url, token) as client:
        done = client.report_outcome(request_id, succeeded, detail)
    _emit(done, as_json)


def approve(
    request_id: RequestId,
    comment: Annotated[str | None, typer.Option(help="Shown with the decision.")] = None,
    url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Approve a request (approvers only)."""
    with client_for(url, token) as client:
        done = client.approve(request_id, comment)
    _emit(done, as_json)


def reject(
    request_id: RequestId,
    comment: Annotated[str | None, typer.Option(help="Shown with the decision.")] = None,
    url: Url = None, token: Token = None, as_json: AsJson = False,
) -> None:
    """Reject a request (approvers only)."""
    with client_for(url, token) as client:
        done = client.reject(request_id, comment)
    _emit(done, as_json)

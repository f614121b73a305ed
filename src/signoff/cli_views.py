"""How the client commands show requests and incidents to a person: Rich tables and
colours in a terminal, plain ``key: value`` lines when the output goes elsewhere, and a
live countdown on stderr while a command waits."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "pending": "yellow", "approved": "bold green", "rejected": "bold red",
    "expired": "magenta", "cancelled": "dim", "open": "yellow", "resolved": "green",
}


def span(seconds: float) -> str:
    """``1h 02m``, ``9m 58s`` or ``42s``."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def seconds_until(instant: Any) -> float | None:
    try:
        return (datetime.fromisoformat(str(instant)) - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError):
        return None


def request_fields(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The request as labelled lines, leaving out what it does not have."""
    status = str(r.get("status"))
    if r.get("disposition"):
        status += f" ({r['disposition']})"
    approvals = r.get("approvals") or []
    outcome = r.get("outcome")
    left = seconds_until(r.get("expires_at")) if r.get("status") == "pending" else None
    rows = [
        ("id", r.get("id")), ("action", r.get("action")), ("status", status),
        ("risk", r.get("risk")), ("incident", r.get("incident_id")),
        ("requested by", r.get("requested_by")),
        ("approvals", f"{len(approvals)} of {r.get('required_approvals')}"
         + (": " + ", ".join(str(a["by"]) for a in approvals) if approvals else "")),
        ("decided by", r.get("decided_by")), ("comment", r.get("decision_comment")),
        ("created", r.get("created_at")),
        ("expires", f"{r.get('expires_at')}"
         + (f" (in {span(left)})" if left is not None and left > 0 else "")),
        ("decided", r.get("decided_at")),
        ("params", json.dumps(r["params"], ensure_ascii=False) if r.get("params") else None),
        ("rationale", r.get("rationale")),
        ("outcome", None if not outcome else
         ("succeeded" if outcome.get("succeeded") else "failed")
         + (f": {outcome['detail']}" if outcome.get("detail") else "")),
    ]
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def incident_fields(i: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        ("id", i.get("id")), ("title", i.get("title")), ("severity", i.get("severity")),
        ("service", i.get("service")), ("fingerprint", i.get("fingerprint")),
        ("status", i.get("status")), ("opened", i.get("opened_at")),
        ("resolved", i.get("resolved_at")), ("resolution", i.get("resolution_type")),
        ("disposition", i.get("disposition")),
    ]
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def _print_fields(fields: list[tuple[str, str]]) -> None:
    out = Console()
    if not out.is_terminal:
        for key, value in fields:
            print(f"{key}: {' '.join(value.split())}")
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in fields:
        style = STATUS_STYLES.get(value.split(" ")[0], "") if key == "status" else ""
        grid.add_row(key, Text(value, style=style))
    out.print(grid)


def print_request(request: dict[str, Any]) -> None:
    _print_fields(request_fields(request))


def print_incident(incident: dict[str, Any]) -> None:
    _print_fields(incident_fields(incident))


def print_requests(items: list[dict[str, Any]]) -> None:
    out = Console()
    columns = ("id", "status", "risk", "expires", "requested by", "action")
    rows = [(str(r["id"]), str(r["status"]), str(r["risk"]), str(r["expires_at"]),
             str(r["requested_by"]), " ".join(str(r["action"]).split())) for r in items]
    if not out.is_terminal:
        for row in [columns, *rows]:
            print("\t".join(row))
        return
    if not rows:
        out.print("[dim]no requests[/]")
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(row[0], Text(row[1], style=STATUS_STYLES.get(row[1], "")), *row[2:])
    out.print(table)


class Countdown:
    """What a waiting command shows on stderr: time left to the deadline and to the
    timeout, refreshed live when stderr is a terminal; notes as lines above it."""

    def __init__(self, request: dict[str, Any], give_up_at: float | None) -> None:
        self.reading = request
        self.give_up_at = give_up_at  # time.monotonic()
        self.retrying = False
        self.err = Console(stderr=True)
        self.live = False

    @contextmanager
    def shown(self) -> Iterator[None]:
        if not self.err.is_terminal:
            yield
            return
        with Live(self, console=self.err, transient=True, refresh_per_second=4):
            self.live = True
            try:
                yield
            finally:
                self.live = False

    def say(self, line: str) -> None:
        if self.live:
            self.err.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def __rich__(self) -> Text:
        r = self.reading
        text = Text("waiting for a decision on ")
        text.append(str(r.get("action") or r.get("id")), style="bold")
        left = seconds_until(r.get("expires_at"))
        if left is not None:
            text.append(f" · expires in {span(left)}", style="yellow")
        if self.give_up_at is not None:
            text.append(f" · gives up in {span(self.give_up_at - time.monotonic())}")
        if self.retrying:
            text.append(" · server unreachable, retrying", style="red")
        return text

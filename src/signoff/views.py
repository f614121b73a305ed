"""Rows as the external contract shows them. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from signoff.lifecycle import RequestStatus, visible_status

Row = Mapping[Any, Any]


def iso(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with an explicit offset."""
    return None if value is None else value.isoformat()


def outcome_view(row: Row) -> dict[str, Any] | None:
    if row["outcome_at"] is None:
        return None
    return {
        "succeeded": row["outcome_succeeded"],
        "detail": row["outcome_detail"],
        "at": iso(row["outcome_at"]),
    }


def request_view(row: Row, approvals: Sequence[Row], now: datetime) -> dict[str, Any]:
    """A request as clients see it; an overdue pending request already reads as expired."""
    stored = RequestStatus(row["status"])
    status = visible_status(stored, row["expires_at"], now)
    overdue = status is not stored
    return {
        "id": str(row["id"]),
        "incident_id": None if row["incident_id"] is None else str(row["incident_id"]),
        "action": row["action"],
        "params": row["params"],
        "risk": row["risk"],
        "rationale": row["rationale"],
        "requested_by": row["requested_by"],
        "status": status.value,
        "disposition": "timeout_ignored" if overdue else row["disposition"],
        "required_approvals": row["required_approvals"],
        "approvals": [{"by": a["approver"], "at": iso(a["at"])} for a in approvals],
        # Overdue but not yet recorded: who "decided" is known, when is not (decided_at null).
        "decided_by": "timeout" if overdue else row["decided_by"],
        "decision_comment": row["decision_comment"],
        "created_at": iso(row["created_at"]),
        "expires_at": iso(row["expires_at"]),
        "decided_at": iso(row["decided_at"]),
        "outcome": outcome_view(row),
        "needs_analysis": bool(row["needs_analysis"]),
        "approvers": list(row["approvers"] or []),
    }


def incident_view(row: Row) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "fingerprint": row["fingerprint"],
        "source": row["source"],
        "title": row["title"],
        "severity": row["severity"],
        "service": row["service"],
        "labels": row["labels"],
        "description": row["description"],
        "status": row["status"],
        "opened_at": iso(row["opened_at"]),
        "resolved_at": iso(row["resolved_at"]),
        "resolution_type": row["resolution_type"],
        "disposition": row["disposition"],
    }


def knowledge_view(row: Row) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "incident_id": str(row["incident_id"]),
        "created_at": iso(row["created_at"]),
        "service": row["service"],
        "fingerprint": row["fingerprint"],
        "title": row["title"],
        "resolution_type": row["resolution_type"],
        "disposition": row["disposition"],
        "actions": row["actions"],
        "summary": row["summary"],
    }


def event_view(row: Row) -> dict[str, Any]:
    return {
        "at": iso(row["at"]),
        "kind": row["kind"],
        "actor": row["actor"],
        "from_status": row["from_status"],
        "to_status": row["to_status"],
        "detail": row["detail"],
        "request_id": None if row["request_id"] is None else str(row["request_id"]),
        "incident_id": None if row["incident_id"] is None else str(row["incident_id"]),
    }


def action_summary(row: Row) -> dict[str, Any]:
    """One proposed action as a knowledge entry records it."""
    return {
        "action": row["action"],
        "status": row["status"],
        "decided_by": row["decided_by"],
        "outcome": outcome_view(row),
    }


def knowledge_summary(
    incident: Row,
    actions: Sequence[dict[str, Any]],
    *,
    resolution_type: str,
    disposition: str | None,
    resolved_at: datetime,
    note: str | None = None,
) -> str:
    """The case file's prose: what happened, what was proposed, who decided, how it ended."""
    minutes = (resolved_at - incident["opened_at"]).total_seconds() / 60
    where = f" on {incident['service']}" if incident["service"] else ""
    lines = [
        f"{incident['severity']} incident{where}: {incident['title']}.",
        f"Resolved as {resolution_type} after {minutes:.1f} min"
        + (f" (disposition {disposition})." if disposition else "."),
    ]
    if actions:
        parts = []
        for a in actions:
            who = f" by {a['decided_by']}" if a["decided_by"] else ""
            outcome = a["outcome"]
            done = ""
            if outcome is not None:
                done = ", succeeded" if outcome["succeeded"] else ", failed"
            parts.append(f"{a['action']!r}: {a['status']}{who}{done}")
        lines.append(f"{len(actions)} action(s) proposed: " + "; ".join(parts) + ".")
    else:
        lines.append("No action was proposed.")
    if note:
        lines.append(f"Note: {note}")
    return " ".join(lines)

"""Views: rows as the contract shows them, and the knowledge entry's prose."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from signoff.views import (
    action_summary,
    event_view,
    incident_view,
    iso,
    knowledge_summary,
    request_view,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
REQUEST_FIELDS = {
    "id", "incident_id", "action", "params", "risk", "rationale", "requested_by", "status",
    "disposition", "required_approvals", "approvals", "decided_by", "decision_comment",
    "created_at", "expires_at", "decided_at", "outcome", "needs_analysis", "approvers",
}
INCIDENT_FIELDS = {
    "id", "fingerprint", "source", "title", "severity", "service", "labels", "description",
    "status", "opened_at", "resolved_at", "resolution_type", "disposition",
}


def request_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(), "incident_id": None, "action": "restart web", "params": {},
        "risk": "medium", "rationale": None, "requested_by": "bot", "status": "pending",
        "disposition": None, "required_approvals": 1, "approval_count": 0, "decided_by": None,
        "decision_comment": None, "created_at": NOW - timedelta(minutes=15),
        "expires_at": NOW, "decided_at": None, "outcome_succeeded": None,
        "outcome_detail": None, "outcome_at": None, "needs_analysis": False,
        "approvers": None,
    }
    row.update(changes)
    return row


def incident_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(), "fingerprint": "fp", "source": "alertmanager", "title": "disk full",
        "severity": "high", "service": "web", "labels": {"a": "b"}, "description": None,
        "status": "open", "opened_at": NOW - timedelta(minutes=30), "resolved_at": None,
        "resolution_type": None, "disposition": None,
    }
    row.update(changes)
    return row


def test_request_view_has_exactly_the_contract_fields() -> None:
    view = request_view(request_row(expires_at=NOW + timedelta(minutes=1)), [], NOW)
    assert set(view) == REQUEST_FIELDS


def test_pending_before_the_deadline_reads_pending() -> None:
    view = request_view(request_row(expires_at=NOW + timedelta(microseconds=1)), [], NOW)
    assert view["status"] == "pending"
    assert view["disposition"] is None


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(days=3)])
def test_overdue_pending_reads_expired_with_decided_at_null(late: timedelta) -> None:
    view = request_view(request_row(expires_at=NOW - late), [], NOW)
    assert view["status"] == "expired"
    assert view["disposition"] == "timeout_ignored"
    assert view["decided_by"] == "timeout"
    assert view["decided_at"] is None


def test_recorded_expiry_shows_when_and_who() -> None:
    row = request_row(
        status="expired", disposition="timeout_ignored", decided_by="timeout",
        decided_at=NOW + timedelta(milliseconds=40),
    )
    view = request_view(row, [], NOW + timedelta(seconds=1))
    assert view["status"] == "expired"
    assert view["decided_by"] == "timeout"
    assert view["decided_at"] == "2026-01-01T12:00:00.040000+00:00"


def test_approved_request_stays_approved_after_its_deadline() -> None:
    row = request_row(
        status="approved", disposition="human_approved", decided_by="alice",
        decided_at=NOW - timedelta(seconds=5),
    )
    view = request_view(row, [{"approver": "alice", "at": NOW - timedelta(seconds=5)}],
                        NOW + timedelta(days=1))
    assert view["status"] == "approved"
    assert view["disposition"] == "human_approved"
    assert view["approvals"] == [{"by": "alice", "at": "2026-01-01T11:59:55+00:00"}]


def test_request_view_outcome() -> None:
    row = request_row(
        status="approved", disposition="human_approved", outcome_succeeded=False,
        outcome_detail="exit 1", outcome_at=NOW,
    )
    view = request_view(row, [], NOW)
    assert view["outcome"] == {"succeeded": False, "detail": "exit 1", "at": iso(NOW)}
    assert request_view(request_row(), [], NOW)["outcome"] is None


def test_times_are_rfc3339_utc_with_offset() -> None:
    view = request_view(request_row(expires_at=NOW + timedelta(minutes=1)), [], NOW)
    for key in ("created_at", "expires_at"):
        text = view[key]
        assert text.endswith("+00:00")
        assert datetime.fromisoformat(text).utcoffset() == timedelta(0)
    assert iso(None) is None


def test_ids_are_strings() -> None:
    incident_id = uuid.uuid4()
    view = request_view(request_row(incident_id=incident_id), [], NOW)
    assert view["incident_id"] == str(incident_id)
    assert uuid.UUID(view["id"])


def test_incident_view_has_exactly_the_contract_fields() -> None:
    row = incident_row()
    view = incident_view(row)
    assert set(view) == INCIDENT_FIELDS
    assert view["id"] == str(row["id"])
    assert view["resolved_at"] is None


def test_event_view() -> None:
    request_id = uuid.uuid4()
    view = event_view({
        "at": NOW, "kind": "request_created", "actor": "bot", "from_status": None,
        "to_status": "pending", "detail": None, "request_id": request_id, "incident_id": None,
    })
    assert view["from_status"] is None and view["to_status"] == "pending"
    assert view["request_id"] == str(request_id) and view["incident_id"] is None
    assert view["at"] == "2026-01-01T12:00:00+00:00"


def test_action_summary() -> None:
    row = request_row(status="approved", decided_by="alice", outcome_succeeded=True,
                      outcome_detail=None, outcome_at=NOW)
    assert action_summary(row) == {
        "action": "restart web", "status": "approved", "decided_by": "alice",
        "outcome": {"succeeded": True, "detail": None, "at": iso(NOW)},
    }


def test_knowledge_summary_of_a_timeout() -> None:
    actions = [action_summary(request_row(status="expired", decided_by="timeout"))]
    text = knowledge_summary(
        incident_row(), actions, resolution_type="timeout", disposition="timeout_ignored",
        resolved_at=NOW,
    )
    assert text == (
        "high incident on web: disk full. "
        "Resolved as timeout after 30.0 min (disposition timeout_ignored). "
        "1 action(s) proposed: 'restart web': expired by timeout."
    )


def test_knowledge_summary_of_an_action_and_a_rejection() -> None:
    actions = [
        action_summary(request_row(action="drop cache", status="rejected", decided_by="bob")),
        action_summary(request_row(status="approved", decided_by="alice",
                                   outcome_succeeded=True, outcome_at=NOW)),
        action_summary(request_row(action="page", status="approved", decided_by="carol",
                                   outcome_succeeded=False, outcome_at=NOW)),
    ]
    text = knowledge_summary(
        incident_row(), actions, resolution_type="action", disposition="human_approved",
        resolved_at=NOW,
    )
    assert "Resolved as action after 30.0 min (disposition human_approved)." in text
    assert (
        "3 action(s) proposed: 'drop cache': rejected by bob; "
        "'restart web': approved by alice, succeeded; 'page': approved by carol, failed."
    ) in text


def test_knowledge_summary_of_a_manual_resolution_without_actions() -> None:
    text = knowledge_summary(
        incident_row(service=None), [], resolution_type="manual", disposition=None,
        resolved_at=NOW, note="fixed by hand",
    )
    assert text == (
        "high incident: disk full. Resolved as manual after 30.0 min. "
        "No action was proposed. Note: fixed by hand"
    )

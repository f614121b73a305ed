"""The answer models of the OpenAPI document describe the views field for field."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from signoff.answers import ActionSummary, ApprovalRequest, Event, Incident, KnowledgeEntry
from signoff.views import action_summary, event_view, incident_view, knowledge_view, request_view
from tests.unit.test_views import NOW, incident_row, request_row

APPROVED = {"status": "approved", "disposition": "human_approved", "decided_by": "alice",
            "decided_at": NOW, "decision_comment": "go", "approval_count": 1,
            "outcome_succeeded": True, "outcome_detail": None, "outcome_at": NOW}


def same_fields(view: dict[str, Any], model: type[BaseModel]) -> None:
    assert set(view) == set(model.model_fields)
    model.model_validate(view)


@pytest.mark.parametrize("changes", [
    {},
    {"expires_at": NOW - timedelta(seconds=1)},  # overdue: reads expired
    {"incident_id": uuid.uuid4(), "rationale": "why", "params": {"a": [1]}, **APPROVED},
])
def test_a_request_is_described(changes: dict[str, Any]) -> None:
    approvals = [{"approver": "alice", "at": NOW}] if changes.get("approval_count") else []
    view = request_view(request_row(**changes), approvals, NOW)
    same_fields({**view, "precedents": []}, ApprovalRequest)  # the service adds them


@pytest.mark.parametrize("changes", [
    {},
    {"status": "resolved", "resolved_at": NOW, "resolution_type": "timeout",
     "disposition": "timeout_ignored", "fingerprint": None, "service": None, "source": None},
])
def test_an_incident_is_described(changes: dict[str, Any]) -> None:
    same_fields(incident_view(incident_row(**changes)), Incident)


def test_a_knowledge_entry_and_its_actions_are_described() -> None:
    action = action_summary(request_row(**APPROVED))
    same_fields(action, ActionSummary)
    same_fields(knowledge_view({
        "id": uuid.uuid4(), "incident_id": uuid.uuid4(), "created_at": NOW, "service": None,
        "fingerprint": "fp", "title": "t", "resolution_type": "action",
        "disposition": "human_approved", "actions": [action], "summary": "s",
    }), KnowledgeEntry)


def test_an_event_is_described() -> None:
    same_fields(event_view({
        "at": NOW, "kind": "request_approved", "actor": "alice", "from_status": "pending",
        "to_status": "approved", "detail": {"approvals": 1}, "request_id": uuid.uuid4(),
        "incident_id": None,
    }), Event)

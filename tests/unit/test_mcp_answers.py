"""What the agent is told for each way a request stands, and that every answer fits the
output schema the tools publish."""

from __future__ import annotations

from typing import Any

import pytest

from signoff.mcp.answers import (
    KnowledgeEntry,
    RequestAnswer,
    next_step,
    precedents_text,
    with_decision,
)

RID = "0b6b8f4e-7f0c-4d3e-9a51-3c1f2a9d8e10"


def request(**changes: Any) -> dict[str, Any]:
    shown = {
        "id": RID, "incident_id": None, "action": "restart web", "params": {}, "risk": "low",
        "rationale": None, "requested_by": "bot", "status": "pending", "disposition": None,
        "required_approvals": 1, "approvals": [], "decided_by": None,
        "decision_comment": None, "created_at": "2026-01-01T12:00:00+00:00",
        "expires_at": "2026-01-01T12:15:00+00:00", "decided_at": None, "outcome": None,
        "needs_analysis": False,
    }
    return {**shown, **changes}


APPROVED = request(status="approved", decided_by="bob", decided_at="2026-01-01T12:01:00+00:00",
                   approvals=[{"by": "alice", "at": "2026-01-01T12:00:30+00:00"},
                              {"by": "bob", "at": "2026-01-01T12:01:00+00:00"}],
                   required_approvals=2, disposition="human_approved")


@pytest.mark.parametrize(("shown", "decision"), [
    (request(), "pending"),
    (APPROVED, "approved"),
    (request(status="rejected", decided_by="alice"), "rejected"),
    (request(status="expired", decided_by="timeout"), "expired"),
    (request(status="cancelled", decided_by="bot"), "cancelled"),
])
def test_the_decision_is_added_and_the_answer_fits_the_published_schema(
    shown: dict[str, Any], decision: str
) -> None:
    out = with_decision(shown)
    assert out == {**shown, "decision": decision}
    RequestAnswer.model_validate(out)  # extra fields (needs_analysis) pass through


def test_approved_says_it_may_run_and_must_report_the_outcome() -> None:
    said = next_step(APPROVED)
    assert said.startswith("APPROVED by alice, bob.")
    assert 'may now run the action "restart web"' in said
    assert f'call report_outcome with request_id "{RID}"' in said


def test_approved_and_reported_says_nothing_is_left_to_do() -> None:
    done = {**APPROVED, "outcome": {"succeeded": False, "detail": "x",
                                    "at": "2026-01-01T12:05:00+00:00"}}
    said = next_step(done)
    assert "failed" in said and "Nothing more to do" in said
    assert "may now run" not in said


def test_ended_without_approval_says_do_not_run_it_who_and_why() -> None:
    rejected = next_step(request(status="rejected", decided_by="alice",
                                 decision_comment="wrong cluster"))
    assert rejected.startswith('REJECTED by alice, saying: "wrong cluster"')
    expired = next_step(request(status="expired", decided_by="timeout"))
    assert expired.startswith("EXPIRED at 2026-01-01T12:15:00+00:00")
    resolved = next_step(request(status="cancelled", decided_by="incident_resolved"))
    assert resolved.startswith("CANCELLED (its incident was resolved first)")
    for said in (rejected, expired, resolved):
        assert 'Do not run the action "restart web"' in said
        assert "may now run" not in said


def test_pending_says_wait_again_before_the_deadline_and_counts_votes() -> None:
    said = next_step(request(required_approvals=2,
                             approvals=[{"by": "alice", "at": "2026-01-01T12:00:30+00:00"}]))
    assert said.startswith("PENDING: nobody has decided yet (1 of 2 approvals so far)")
    assert f'wait_for_decision with request_id "{RID}"' in said
    assert "before 2026-01-01T12:15:00+00:00" in said
    assert "(1 of" not in next_step(request())


def test_precedents_read_newest_first_or_say_there_are_none() -> None:
    entry = {"id": "k1", "incident_id": "i1", "created_at": "2026-01-02T00:00:00+00:00",
             "service": "web", "fingerprint": "fp", "title": "web down",
             "resolution_type": "action", "disposition": "human_approved",
             "actions": [{"action": "restart web", "status": "approved",
                          "decided_by": "alice", "outcome": None}],
             "summary": "high incident on web: web down. Resolved as action."}
    KnowledgeEntry.model_validate(entry)
    assert precedents_text([]).startswith("No earlier case matches")
    assert precedents_text([entry]) == (
        "1 earlier case(s) match, newest first:\n"
        "- 2026-01-02T00:00:00+00:00: high incident on web: web down. Resolved as action.")

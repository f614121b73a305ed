"""What an agent reads back: the shapes of the tools' structured answers, and the text that
tells the model plainly what to do next. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Decision = Literal["approved", "rejected", "expired", "cancelled", "pending"]
ENDED = ("approved", "rejected", "expired", "cancelled")


class Approval(BaseModel):
    by: str
    at: str | None = None


class Outcome(BaseModel):
    succeeded: bool
    detail: str | None = None
    at: str | None = None


class RequestAnswer(BaseModel):
    """An approval request as the API shows it, and the decision it has come to. Fields
    that later versions of the API add are passed on as they come."""

    model_config = ConfigDict(extra="allow")

    id: str
    incident_id: str | None = None
    action: str
    params: dict[str, Any] | None = None
    risk: str
    rationale: str | None = None
    requested_by: str
    status: Decision
    disposition: str | None = None
    required_approvals: int
    approvals: list[Approval]
    decided_by: str | None = None
    decision_comment: str | None = None
    created_at: str
    expires_at: str
    decided_at: str | None = None
    outcome: Outcome | None = None
    decision: Decision = Field(description=(
        "approved: the action may run, then report its outcome; rejected, expired or "
        "cancelled: it must not run; pending: nobody has decided yet, wait again."))


class ProposedAction(BaseModel):
    model_config = ConfigDict(extra="allow")

    action: str
    status: str
    decided_by: str | None = None
    outcome: Outcome | None = None


class KnowledgeEntry(BaseModel):
    """The case file of an incident: what happened, what was proposed, who decided, how
    it ended."""

    model_config = ConfigDict(extra="allow")

    id: str
    incident_id: str
    created_at: str
    service: str | None = None
    fingerprint: str | None = None
    title: str
    resolution_type: str
    disposition: str | None = None
    actions: list[ProposedAction]
    summary: str


class Precedents(BaseModel):
    precedents: list[KnowledgeEntry] = Field(
        description="The latest matching knowledge entries, newest first.")


def with_decision(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the API showed it, plus ``decision``."""
    status = request.get("status")
    return {**request, "decision": status if status in ENDED else "pending"}


def _said(comment: object) -> str:
    return f', saying: "{comment}"' if comment else ""


def _approvers(request: Mapping[str, Any]) -> str:
    names = [a["by"] for a in request.get("approvals") or [] if a.get("by")]
    return ", ".join(names) if names else str(request.get("decided_by") or "nobody")


def next_step(request: Mapping[str, Any]) -> str:
    """One paragraph for the model: how the request stands and what it must do now."""
    rid, status = request["id"], request.get("status")
    action = f'the action "{request["action"]}"'
    comment = _said(request.get("decision_comment"))
    if status == "approved":
        outcome = request.get("outcome")
        if outcome:
            how = "succeeded" if outcome.get("succeeded") else "failed"
            return (f"APPROVED by {_approvers(request)}; its outcome was reported at "
                    f"{outcome.get('at')}: {how}. Nothing more to do for request {rid}. Do "
                    f"not run {action} again without asking again.")
        return (f"APPROVED by {_approvers(request)}{comment}. You may now run {action} "
                f"(request {rid}), exactly as it was approved. When it has finished, call "
                f'report_outcome with request_id "{rid}", succeeded true or false, and a '
                "short detail of what happened.")
    if status == "rejected":
        return (f"REJECTED by {request.get('decided_by')}{comment}. Do not run {action}. "
                "Tell the user it was rejected, and why; ask again only with a different "
                "plan.")
    if status == "expired":
        return (f"EXPIRED at {request.get('expires_at')}: nobody decided in time. Do not "
                f"run {action}. If it is still needed, ask again with request_approval.")
    if status == "cancelled":
        by = request.get("decided_by")
        why = ("its incident was resolved first" if by == "incident_resolved"
               else f"by {by}")
        return f"CANCELLED ({why}){comment}. Do not run {action}."
    votes = request.get("approvals") or []
    needed = request.get("required_approvals") or 1
    so_far = f" ({len(votes)} of {needed} approvals so far)" if needed > 1 else ""
    return (f"PENDING: nobody has decided yet{so_far}. Do not run {action} yet. Call "
            f'wait_for_decision with request_id "{rid}" to keep waiting, before '
            f"{request.get('expires_at')}: the request expires then, unapproved.")


def precedents_text(entries: Sequence[Mapping[str, Any]]) -> str:
    """The matching cases in a few lines, newest first."""
    if not entries:
        return "No earlier case matches: there is no precedent to go by."
    lines = [f"{len(entries)} earlier case(s) match, newest first:"]
    lines += [f"- {e.get('created_at')}: {e.get('summary')}" for e in entries]
    return "\n".join(lines)


def refusal_text(code: str, message: str) -> str:
    """A refusal as the API gave it: its error code, then its message."""
    return f"{code}: {message}"

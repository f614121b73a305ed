"""The shapes of what clients get back, for the OpenAPI document.

The routes answer the dicts that ``signoff.views`` and the service build; these models
describe them (field for field: ``tests/unit/test_answers.py`` holds them to it) and are
never used to validate an answer, which would cost every call a second pass over it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from signoff.lifecycle import (
    Disposition,
    EventKind,
    IncidentStatus,
    RequestStatus,
    ResolutionType,
    Risk,
    Severity,
)


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


# -- approval requests ------------------------------------------------------------------


class Approval(Answer):
    by: str = Field(description="The approver's principal.")
    at: datetime


class Outcome(Answer):
    succeeded: bool
    detail: str | None
    at: datetime


class ApprovalRequest(Answer):
    """An approval request. An overdue pending request already reads ``expired``, with
    ``decided_by`` ``timeout`` and ``decided_at`` null until the resolver records it."""

    id: UUID
    incident_id: UUID | None
    action: str
    params: dict[str, Any]
    risk: Risk
    rationale: str | None
    requested_by: str
    status: RequestStatus
    disposition: Disposition | None
    required_approvals: int = Field(ge=1)
    approvals: list[Approval] = Field(description="Approvals so far, oldest first.")
    decided_by: str | None = Field(
        description="Who ended it; ``timeout`` when it expired, ``incident_resolved`` when "
                    "its incident was resolved first.")
    decision_comment: str | None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    outcome: Outcome | None
    needs_analysis: bool = Field(
        description="The action is a placeholder: it cannot be approved.")
    approvers: list[str] = Field(
        description="Who alone may decide it: principals and ``group:NAME`` entries; "
                    "empty: any approver.")


class RequestPage(Answer):
    items: list[ApprovalRequest]
    next_cursor: str | None = Field(description="Pass it as ``cursor`` for the next page.")


# -- incidents ----------------------------------------------------------------------------


class Incident(Answer):
    id: UUID
    fingerprint: str | None
    source: str | None
    title: str
    severity: Severity
    service: str | None
    labels: dict[str, Any]
    description: str | None
    status: IncidentStatus
    opened_at: datetime
    resolved_at: datetime | None
    resolution_type: ResolutionType | None
    disposition: Disposition | None = Field(description="Null for an incident resolved by hand.")


class IncidentPage(Answer):
    items: list[Incident]
    next_cursor: str | None


# -- audit events and knowledge -----------------------------------------------------------


class Event(Answer):
    at: datetime
    kind: EventKind
    actor: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any] | None
    request_id: UUID | None
    incident_id: UUID | None


class EventPage(Answer):
    items: list[Event] = Field(description="Oldest first.")
    next_cursor: str | None


class ActionSummary(Answer):
    """One request of the incident, as it stood when the incident was resolved."""

    action: str
    status: RequestStatus
    decided_by: str | None
    outcome: Outcome | None


class KnowledgeEntry(Answer):
    id: UUID
    incident_id: UUID
    created_at: datetime
    service: str | None
    fingerprint: str | None
    title: str
    resolution_type: ResolutionType
    disposition: Disposition | None
    actions: list[ActionSummary]
    summary: str


class KnowledgePage(Answer):
    items: list[KnowledgeEntry]
    next_cursor: str | None


class Link(Answer):
    """A single-use link: it signs its person in for this request alone."""

    url: str = Field(description="``{SIGNOFF_PUBLIC_URL}/ui/l/{secret}``; shown only this once.")
    expires_at: datetime = Field(description="The request's deadline: the link dies then.")


class Token(Answer):
    """A token as an admin sees it: never its secret, nor its hash."""

    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="To within a minute; null if never.")
    revoked_at: datetime | None
    revoked: bool


class TokenList(Answer):
    items: list[Token]


# -- statistics and operations ------------------------------------------------------------


class Dispositions(Answer):
    auto_repair: int
    human_approved: int
    human_rejected: int
    timeout_ignored: int
    cancelled: int


class DecisionSeconds(Answer):
    p50: float | None
    p90: float | None


class ExpiryLateness(Answer):
    p50: float | None
    p99: float | None
    max: float | None


class Stats(Answer):
    """How the requests that ended in ``[since, until)`` ended. A rate with no
    denominator, and a percentile with nothing to measure, is null."""

    since: datetime | None
    until: datetime | None
    dispositions: Dispositions
    total: int
    human_override_rate: float | None
    timeout_ignored_rate: float | None
    decision_seconds: DecisionSeconds
    expiry_lateness_seconds: ExpiryLateness


class Finding(Answer):
    """What a check found; it names the rows it is about."""

    request_id: UUID | SkipJsonSchema[None] = None
    incident_id: UUID | SkipJsonSchema[None] = None
    outbox_id: int | SkipJsonSchema[None] = None
    channel: str | SkipJsonSchema[None] = Field(
        default=None, description="The chat a card is missing from (W-2, W-5).")
    detail: str


class WatchdogCheck(Answer):
    id: str = Field(examples=["W-1"])
    name: str
    threshold: str
    applies: bool
    count: int = Field(ge=0, description="All findings; at most 100 are listed.")
    findings: list[Finding]


class Watchdog(Answer):
    checks: list[WatchdogCheck]


class Health(Answer):
    status: Literal["ok"]


class TelegramAck(Answer):
    ok: Literal[True]


# -- refusals -------------------------------------------------------------------------------


class Issue(Answer):
    """One way a body, header or query parameter failed its schema."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorDetail(Answer):
    code: str = Field(description="Stable and machine-readable.")
    message: str = Field(description="For people; may change.")


class ConflictDetail(ErrorDetail):
    status: str = Field(
        description="The current status of what won: the request's (``expired`` once "
                    "due), or the incident's for ``incident_resolved``.")


class InvalidDetail(ErrorDetail):
    details: list[Issue] | SkipJsonSchema[None] = Field(
        default=None, description="When the body, a header or a query parameter fails "
                                  "its schema.")


class Error(Answer):
    error: ErrorDetail


class ConflictError(Answer):
    error: ConflictDetail


class InvalidError(Answer):
    error: InvalidDetail

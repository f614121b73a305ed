"""The pure rules of the lifecycle: statuses, dispositions, transitions, quorum. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {RequestStatus.APPROVED, RequestStatus.REJECTED, RequestStatus.EXPIRED, RequestStatus.CANCELLED}
)


class IncidentStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Disposition(StrEnum):
    AUTO_REPAIR = "auto_repair"
    HUMAN_APPROVED = "human_approved"
    HUMAN_REJECTED = "human_rejected"
    TIMEOUT_IGNORED = "timeout_ignored"
    CANCELLED = "cancelled"


class ResolutionType(StrEnum):
    TIMEOUT = "timeout"
    ACTION = "action"
    MANUAL = "manual"
    ALERT_RESOLVED = "alert_resolved"


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


class Risk(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Role(StrEnum):
    REQUESTER = "requester"
    APPROVER = "approver"
    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is acting: a token's name, or an approver mapped from a chat user, and a role."""

    name: str
    role: Role


class EventKind(StrEnum):
    REQUEST_CREATED = "request_created"
    REQUEST_APPROVAL_ADDED = "request_approval_added"
    REQUEST_APPROVED = "request_approved"
    REQUEST_REJECTED = "request_rejected"
    REQUEST_EXPIRED = "request_expired"
    REQUEST_CANCELLED = "request_cancelled"
    REQUEST_OUTCOME = "request_outcome"
    INCIDENT_OPENED = "incident_opened"
    INCIDENT_RESOLVED = "incident_resolved"
    TOKEN_REVOKED = "token_revoked"
    GROUP_MEMBERS_ADDED = "group_members_added"
    GROUP_MEMBERS_REMOVED = "group_members_removed"


# Principals that are not tokens: who "decided" when nobody did.
TIMEOUT_ACTOR = "timeout"
INCIDENT_RESOLVED_ACTOR = "incident_resolved"

# Statuses of a request that keep its incident open: someone may still act on it.
# An approved request keeps its incident open until its outcome is reported.
LIVE = frozenset({RequestStatus.PENDING})

ROLE_GRANTS: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.REQUESTER: frozenset({Role.VIEWER, Role.REQUESTER}),
    Role.APPROVER: frozenset({Role.VIEWER, Role.APPROVER}),
    Role.ADMIN: frozenset(Role),
}


def role_allows(role: Role, needed: Role) -> bool:
    """Whether a token of ``role`` may do what needs ``needed``; admin may do everything."""
    return needed in ROLE_GRANTS[role]


def is_due(expires_at: datetime, now: datetime) -> bool:
    """A request is due from the instant of its deadline on (``expires_at <= now``)."""
    return expires_at <= now


def visible_status(status: RequestStatus, expires_at: datetime, now: datetime) -> RequestStatus:
    """The status a reader sees: an overdue pending request already reads as expired."""
    if status is RequestStatus.PENDING and is_due(expires_at, now):
        return RequestStatus.EXPIRED
    return status


def disposition_for(status: RequestStatus, *, by_policy: bool = False) -> Disposition | None:
    """The disposition a request gets when it reaches ``status``."""
    match status:
        case RequestStatus.APPROVED:
            return Disposition.AUTO_REPAIR if by_policy else Disposition.HUMAN_APPROVED
        case RequestStatus.REJECTED:
            return Disposition.HUMAN_REJECTED
        case RequestStatus.EXPIRED:
            return Disposition.TIMEOUT_IGNORED
        case RequestStatus.CANCELLED:
            return Disposition.CANCELLED
        case _:
            return None


def quorum_reached(approvals: int, required: int) -> bool:
    """Whether ``approvals`` distinct approvers satisfy ``required``."""
    return approvals >= required


def can_transition(current: RequestStatus, target: RequestStatus) -> bool:
    """Only pending requests move, and only to a terminal status. Terminal states are final."""
    return current is RequestStatus.PENDING and target in TERMINAL

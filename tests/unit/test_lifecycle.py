"""The pure rules: statuses, terminal set, dispositions, quorum, visibility, role grants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from signoff.lifecycle import (
    LIVE,
    TERMINAL,
    Disposition,
    RequestStatus,
    Role,
    can_transition,
    disposition_for,
    is_due,
    quorum_reached,
    role_allows,
    visible_status,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def test_statuses_match_the_contract() -> None:
    assert {s.value for s in RequestStatus} == {
        "pending", "approved", "rejected", "expired", "cancelled"
    }
    assert set(RequestStatus) - {RequestStatus.PENDING} == TERMINAL
    assert RequestStatus.PENDING not in TERMINAL
    assert {RequestStatus.PENDING} == LIVE


def test_dispositions_match_the_contract() -> None:
    assert {d.value for d in Disposition} == {
        "auto_repair", "human_approved", "human_rejected", "timeout_ignored", "cancelled"
    }


@pytest.mark.parametrize(
    ("status", "by_policy", "expected"),
    [
        (RequestStatus.APPROVED, False, Disposition.HUMAN_APPROVED),
        (RequestStatus.APPROVED, True, Disposition.AUTO_REPAIR),
        (RequestStatus.REJECTED, False, Disposition.HUMAN_REJECTED),
        (RequestStatus.EXPIRED, False, Disposition.TIMEOUT_IGNORED),
        (RequestStatus.CANCELLED, False, Disposition.CANCELLED),
        (RequestStatus.PENDING, False, None),
    ],
)
def test_disposition_for(
    status: RequestStatus, by_policy: bool, expected: Disposition | None
) -> None:
    assert disposition_for(status, by_policy=by_policy) == expected


def test_every_terminal_status_has_a_disposition() -> None:
    for status in TERMINAL:
        assert disposition_for(status) is not None


@pytest.mark.parametrize("current", list(RequestStatus))
@pytest.mark.parametrize("target", list(RequestStatus))
def test_only_pending_moves_and_only_to_a_terminal_status(
    current: RequestStatus, target: RequestStatus
) -> None:
    allowed = current is RequestStatus.PENDING and target is not RequestStatus.PENDING
    assert can_transition(current, target) is allowed


def test_terminal_states_are_final() -> None:
    for current in TERMINAL:
        assert not any(can_transition(current, target) for target in RequestStatus)


@pytest.mark.parametrize(
    ("approvals", "required", "reached"),
    [(0, 1, False), (1, 1, True), (1, 2, False), (2, 2, True), (3, 2, True), (2, 3, False)],
)
def test_quorum(approvals: int, required: int, reached: bool) -> None:
    assert quorum_reached(approvals, required) is reached


def test_due_exactly_at_the_deadline() -> None:
    assert not is_due(NOW + TICK, NOW)
    assert is_due(NOW, NOW)
    assert is_due(NOW - TICK, NOW)


def test_due_compares_instants_not_wall_clocks() -> None:
    taipei = NOW.astimezone(timezone(timedelta(hours=8)))
    assert is_due(taipei, NOW)
    assert not is_due(taipei + TICK, NOW)


def test_visible_status_reads_an_overdue_pending_request_as_expired() -> None:
    assert visible_status(RequestStatus.PENDING, NOW + TICK, NOW) is RequestStatus.PENDING
    assert visible_status(RequestStatus.PENDING, NOW, NOW) is RequestStatus.EXPIRED
    assert visible_status(RequestStatus.PENDING, NOW - TICK, NOW) is RequestStatus.EXPIRED


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_visible_status_leaves_terminal_statuses_alone(status: RequestStatus) -> None:
    # An approved request stays approved long after its deadline.
    assert visible_status(status, NOW - timedelta(days=1), NOW) is status


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.VIEWER, {Role.VIEWER}),
        (Role.REQUESTER, {Role.VIEWER, Role.REQUESTER}),
        (Role.APPROVER, {Role.VIEWER, Role.APPROVER}),
        (Role.ADMIN, set(Role)),
    ],
)
def test_role_grants(role: Role, allowed: set[Role]) -> None:
    for needed in Role:
        assert role_allows(role, needed) is (needed in allowed), (role, needed)


def test_every_role_may_read() -> None:
    assert all(role_allows(role, Role.VIEWER) for role in Role)


def test_requester_and_approver_are_separate() -> None:
    assert not role_allows(Role.REQUESTER, Role.APPROVER)
    assert not role_allows(Role.APPROVER, Role.REQUESTER)

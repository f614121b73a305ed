"""A press of a card's Approve or Reject button, whatever the chat it came from.

The chat's front end (``notify.presses`` for Telegram, ``notify.slack_presses`` for
Slack) checks that the press is authentic and finds who pressed; here the press decides
as the mapped approver through the service, with the same guarded transitions and the
same refusals as the API, and the outcome is put in a few words for the presser. The
card itself is edited by the outbox when the request ends.
"""

from __future__ import annotations

import uuid

from signoff import errors
from signoff.lifecycle import Principal, Role
from signoff.service import Service

APPROVE, REJECT = "approve", "reject"
NOT_AN_APPROVER = "You are not an approver in signoff; nothing changed."
UNKNOWN_BUTTON = "Unknown button; nothing changed."


def refusal_text(exc: errors.SignoffError) -> str:
    """Why a press changed nothing, for the person who pressed."""
    if isinstance(exc, errors.RequestNotPending):
        return "Too late: the request has expired." if exc.status == "expired" else (
            f"Nothing changed: the request is already {exc.status}.")
    if isinstance(exc, errors.AlreadyApproved):
        return "You have already approved this request."
    if isinstance(exc, errors.NotAnApprover):
        return "Only the request's approvers may decide it; nothing changed."
    if isinstance(exc, errors.Forbidden):
        if "own request" in exc.message:
            return "You may not decide your own request."
        return f"Nothing changed: {exc.message}."
    if isinstance(exc, errors.NeedsAnalysis):
        return "A placeholder action cannot be approved; reject it or ask again."
    if isinstance(exc, errors.NotFound):
        return "This request does not exist."
    return "Nothing changed: " + exc.message


async def press_button(
    service: Service, approver: str | None, decision: str, request_id: uuid.UUID | None,
    *, via: str,
) -> str:
    """Decide as ``approver`` (None: the presser is not mapped to one); what to tell them."""
    if approver is None:
        return NOT_AN_APPROVER
    if decision not in (APPROVE, REJECT) or request_id is None:
        return UNKNOWN_BUTTON
    who = Principal(approver, Role.APPROVER)
    decide = service.approve if decision == APPROVE else service.reject
    try:
        out = await decide(who, request_id, via=via)
    except errors.SignoffError as exc:
        return refusal_text(exc)
    if out["status"] == "pending":
        return f"Approval recorded ({len(out['approvals'])} of {out['required_approvals']})."
    return f"Done: {out['status']} by {approver}."

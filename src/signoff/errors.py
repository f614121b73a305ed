"""Domain errors. One base, one subclass per case; the docstring is the default message.

The HTTP layer maps them to status codes in one place (``api.errors``).
"""

from __future__ import annotations


class SignoffError(Exception):
    """Something went wrong."""

    code = "error"
    http_status = 400

    def __init__(self, message: str | None = None, *, status: str | None = None) -> None:
        # A docstring's lines joined as one sentence: no newline or indent in an answer.
        self.message = message or " ".join((self.__doc__ or self.code).split())
        # For conflicts: the current status of the thing that won.
        self.status = status
        super().__init__(self.message)


class Unauthenticated(SignoffError):
    """A valid bearer token is required: send the header Authorization: Bearer <token>."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(SignoffError):
    """This token may not do that."""

    code = "forbidden"
    http_status = 403


class NotAnApprover(Forbidden):
    """Only the request's approvers may decide it, and you are not one of them."""

    code = "not_an_approver"


class NotFound(SignoffError):
    """Not found."""

    code = "not_found"
    http_status = 404


class RequestNotFound(NotFound):
    """No approval request has that id."""


class IncidentNotFound(NotFound):
    """No incident has that id."""


class TokenNotFound(NotFound):
    """No live token has that name."""


class LinkNotFound(NotFound):
    """No link has that address."""


class LinkGone(SignoffError):
    """This link no longer works."""

    code = "link_gone"
    http_status = 410

    def __init__(self, message: str | None = None, *, status: str | None = None,
                 why: str = "used", at: str | None = None, by: str | None = None) -> None:
        super().__init__(message, status=status)
        # For a page that says it in its own words and time zone: ``used`` (at),
        # ``ended`` (status, by) or ``expired`` (at).
        self.why, self.at, self.by = why, at, by


class Conflict(SignoffError):
    """The state has changed: this transition is no longer possible."""

    code = "conflict"
    http_status = 409


class RequestNotPending(Conflict):
    """The request is no longer pending."""

    code = "request_not_pending"


class IncidentResolved(Conflict):
    """The incident is already resolved."""

    code = "incident_resolved"


class AlreadyApproved(Conflict):
    """You have already approved this request."""

    code = "already_approved"


class OutcomeAlreadyReported(Conflict):
    """The outcome of this request has already been reported."""

    code = "outcome_already_reported"


class PolicyAlreadyPaused(Conflict):
    """The policy is already paused."""

    code = "policy_paused"


class PolicyNotPaused(Conflict):
    """The policy is not paused."""

    code = "policy_not_paused"


class InvalidInput(SignoffError):
    """The input is not valid."""

    code = "invalid"
    http_status = 422


class NeedsAnalysis(InvalidInput):
    """The action is a placeholder (its analysis failed): it cannot be approved. Reject it,
    or ask again with a real action."""

    code = "needs_analysis"


class CallbackRefused(InvalidInput):
    """callback_url names a destination that signoff does not send callbacks to."""

    code = "callback_refused"


class IdempotencyMismatch(InvalidInput):
    """This Idempotency-Key was used before with a different body."""

    code = "idempotency_key_reused"


class FutureDay(InvalidInput):
    """That day has not begun yet in the display time zone: there is nothing to report."""

    code = "future_day"


class DatabaseNotReady(SignoffError):
    """The database is not ready for signoff."""

    code = "database_not_ready"
    http_status = 503
    # What a person can do about it, after the message.
    advice = "set SIGNOFF_DATABASE_URL, or run signoff db upgrade"


class DatabaseMissing(DatabaseNotReady):
    """The database does not exist."""


class DatabaseNotMigrated(DatabaseNotReady):
    """The database is not migrated: it has no signoff schema, or an older one."""


class DatabaseTooNew(DatabaseNotReady):
    """The database was migrated by a newer signoff than this one."""

    advice = "run the signoff version that migrated it, or newer"

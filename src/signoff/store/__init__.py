"""Every query and every state change, as guarded SQL. The caller owns the transaction;
nothing here commits.

One module a concept, each using only the ones above it in this list:

``rows``       audit events, batched inserts, ``IN`` lists, the definition of a live request
``tokens``     API tokens, stored hashed
``sessions``   the web console's sessions, bound to their tokens
``incidents``  incidents, their closing, and the knowledge entries closing writes
``alerts``     incidents opened and resolved by alerts, many at once
``requests``   approval requests and their transitions (approve, reject, cancel, outcome)
``expiry``     the resolver's claims and the reads that plan its next pass
``policy``     the policy's kill switch, lookups and approvals, and precedents

Callers use the names gathered here (``store.approve_request``), not the modules.
"""

from signoff.lifecycle import Principal
from signoff.store.alerts import open_alert_incidents, resolve_alert_incidents
from signoff.store.expiry import (
    ExpiryBatch,
    count_due_requests,
    due_request_ids,
    expire_due_requests,
    next_deadline,
    pending_overview,
    settle_request,
)
from signoff.store.groups import (
    add_members,
    list_groups,
    may_decide,
    remove_members,
    unknown_groups,
)
from signoff.store.incidents import (
    close_incidents,
    create_incident,
    get_incident,
    resolve_incident,
)
from signoff.store.links import create_link, find_link, live_roles, use_link
from signoff.store.policy import (
    PolicyLookups,
    auto_approve_request,
    current_pause,
    ended_with_policy,
    open_incident_id,
    pause_policy,
    precedents_of,
    resume_policy,
)
from signoff.store.readings import read_requests
from signoff.store.requests import (
    CHANGED_CHANNEL,
    WAKE_CHANNEL,
    approve_request,
    cancel_request,
    create_request,
    explain_outcome_refusal,
    explain_refusal,
    find_idempotent_request,
    get_request,
    lock_incident,
    notify_changed,
    reject_request,
    report_outcome,
)
from signoff.store.rows import EVENTS_KEY, PENDING, Row, is_live, record_events
from signoff.store.sessions import (
    create_session,
    end_session,
    find_session,
    token_id_of,
)
from signoff.store.tokens import (
    TOKENS_CHANGED,
    authenticate,
    create_token,
    hash_token,
    list_tokens,
    revoke_tokens,
    touch_token,
)

__all__ = [
    "CHANGED_CHANNEL",
    "EVENTS_KEY",
    "PENDING",
    "TOKENS_CHANGED",
    "WAKE_CHANNEL",
    "ExpiryBatch",
    "PolicyLookups",
    "Principal",
    "Row",
    "add_members",
    "approve_request",
    "authenticate",
    "auto_approve_request",
    "cancel_request",
    "close_incidents",
    "count_due_requests",
    "create_incident",
    "create_link",
    "create_request",
    "create_session",
    "create_token",
    "current_pause",
    "due_request_ids",
    "end_session",
    "ended_with_policy",
    "expire_due_requests",
    "explain_outcome_refusal",
    "explain_refusal",
    "find_idempotent_request",
    "find_link",
    "find_session",
    "get_incident",
    "get_request",
    "hash_token",
    "is_live",
    "list_groups",
    "list_tokens",
    "live_roles",
    "lock_incident",
    "may_decide",
    "next_deadline",
    "notify_changed",
    "open_alert_incidents",
    "open_incident_id",
    "pause_policy",
    "pending_overview",
    "precedents_of",
    "read_requests",
    "record_events",
    "reject_request",
    "remove_members",
    "report_outcome",
    "resolve_alert_incidents",
    "resolve_incident",
    "resume_policy",
    "revoke_tokens",
    "settle_request",
    "token_id_of",
    "touch_token",
    "unknown_groups",
    "use_link",
]

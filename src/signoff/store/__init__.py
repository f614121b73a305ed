"""Every query and every state change, as guarded SQL. The caller owns the transaction;
nothing here commits.

One module a concept, each using only the ones above it in this list:

``rows``       audit events, batched inserts, ``IN`` lists, the definition of a live request
``tokens``     API tokens, stored hashed
``sessions``   the web console's sessions, bound to their tokens
``incidents``  incidents, their closing, and the knowledge entries closing writes
``requests``   approval requests and their transitions (approve, reject, cancel, outcome)
``expiry``     the resolver's claims and the reads that plan its next pass

Callers use the names gathered here (``store.approve_request``), not the modules.
"""

from signoff.lifecycle import Principal
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
    notify_changed,
    reject_request,
    report_outcome,
)
from signoff.store.rows import EVENTS_KEY, PENDING, Row, is_live, record_events
from signoff.store.sessions import (
    create_session,
    delete_session,
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
    "Principal",
    "Row",
    "add_members",
    "approve_request",
    "authenticate",
    "cancel_request",
    "close_incidents",
    "count_due_requests",
    "create_incident",
    "create_link",
    "create_request",
    "create_session",
    "create_token",
    "delete_session",
    "due_request_ids",
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
    "may_decide",
    "next_deadline",
    "notify_changed",
    "pending_overview",
    "record_events",
    "reject_request",
    "remove_members",
    "report_outcome",
    "resolve_incident",
    "revoke_tokens",
    "settle_request",
    "token_id_of",
    "touch_token",
    "unknown_groups",
    "use_link",
]

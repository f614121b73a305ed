"""Table definitions (SQLAlchemy Core), one schema for SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC instant: ``timestamptz`` on PostgreSQL, a sortable text on SQLite.

    Naive datetimes are refused: every instant in signoff carries its offset.
    SQLite keeps microseconds in a fixed-width text, so comparisons in SQL stay correct.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime refused: {value!r} (give a UTC offset)")
        instant: datetime = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return instant.replace(tzinfo=None)
        return instant

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text, e.g. from an aggregate
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# JSON whose Python None is SQL NULL (not the JSON text ``null``): "none given".
NullableJSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql")
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    # When the token was last seen, to within a minute (``store.tokens.TOUCH_EVERY``).
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Index(None, "name"),
)

# The web console's sessions: the secret's hash, bound to the token that signed in.
sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("token_id", sa.Uuid(), sa.ForeignKey("tokens.id"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    # Signed out: the session is kept, ended (nothing is deleted).
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Index(None, "expires_at"),
    sa.Index(None, "token_id"),
)

incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("fingerprint", sa.Text(), nullable=True),
    sa.Column("source", sa.Text(), nullable=True),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("service", sa.Text(), nullable=True),
    sa.Column("labels", JSONType, nullable=False),
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("opened_by", sa.Text(), nullable=True),
    sa.Column("opened_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("resolution_type", sa.String(32), nullable=True),
    sa.Column("disposition", sa.String(32), nullable=True),
    sa.Column("resolved_by", sa.Text(), nullable=True),
    sa.Column("resolution_note", sa.Text(), nullable=True),
    # At most one open incident per fingerprint: the dedupe of POST /incidents.
    sa.Index(
        "uq_incidents_open_fingerprint",
        "fingerprint",
        unique=True,
        postgresql_where=sa.text("status = 'open' AND fingerprint IS NOT NULL"),
        sqlite_where=sa.text("status = 'open' AND fingerprint IS NOT NULL"),
    ),
    sa.Index(None, "opened_at", "id"),
    sa.Index(None, "status", "opened_at"),
    sa.Index(None, "service", "opened_at"),
)

HUMAN_DECIDED = "disposition IN ('human_approved', 'human_rejected')"
AUTO_DECIDED = "disposition = 'auto_repair'"

requests = sa.Table(
    "approval_requests",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("incident_id", sa.Uuid(), sa.ForeignKey("incidents.id"), nullable=True),
    sa.Column("action", sa.Text(), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("risk", sa.String(16), nullable=False),
    sa.Column("rationale", sa.Text(), nullable=True),
    sa.Column("requested_by", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("disposition", sa.String(32), nullable=True),
    sa.Column("required_approvals", sa.Integer(), nullable=False),
    sa.Column("approval_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("decided_by", sa.Text(), nullable=True),
    sa.Column("decision_comment", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("outcome_succeeded", sa.Boolean(), nullable=True),
    sa.Column("outcome_detail", sa.Text(), nullable=True),
    sa.Column("outcome_at", UTCDateTime(), nullable=True),
    sa.Column("callback_url", sa.Text(), nullable=True),
    sa.Column("idempotency_key", sa.Text(), nullable=True),
    sa.Column("idempotency_digest", sa.String(64), nullable=True),
    # The action is a placeholder (its analysis failed): kept, shown, never approvable.
    sa.Column("needs_analysis", sa.Boolean(), nullable=False, server_default=sa.false()),
    # When the next reminder falls due; NULL once every reminder has been issued.
    sa.Column("next_reminder_at", UTCDateTime(), nullable=True),
    # Who alone may decide it: principals and "group:NAME" entries; NULL: any approver.
    sa.Column("approvers", NullableJSON, nullable=True),
    # The incident's, copied at create (an incident's never change): precedent and the
    # policy's limits read them without a join.
    sa.Column("fingerprint", sa.Text(), nullable=True),
    sa.Column("service", sa.Text(), nullable=True),
    # The policy's evaluation at create (NULL without a policy file): compressed JSON
    # (``signoff.policy.record``), written on every create, read back whole.
    sa.Column("policy", sa.LargeBinary(), nullable=True),
    sa.CheckConstraint("required_approvals >= 1", name="required_approvals_positive"),
    # The resolver's only read path: pending requests by deadline.
    sa.Index(
        "ix_approval_requests_pending_deadline",
        "expires_at",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    ),
    sa.Index(
        "uq_approval_requests_idempotency",
        "requested_by",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
    ),
    sa.Index(
        "ix_approval_requests_pending_reminder",
        "next_reminder_at",
        postgresql_where=sa.text("status = 'pending' AND next_reminder_at IS NOT NULL"),
        sqlite_where=sa.text("status = 'pending' AND next_reminder_at IS NOT NULL"),
    ),
    # Approved requests still waiting for their outcome (a watchdog's, the doctor's).
    sa.Index(
        "ix_approval_requests_awaiting_outcome",
        "decided_at",
        postgresql_where=sa.text("status = 'approved' AND outcome_at IS NULL"),
        sqlite_where=sa.text("status = 'approved' AND outcome_at IS NULL"),
    ),
    # A policy rule's limit: the policy's approvals for a service in the trailing window
    # (on PostgreSQL with the rule that approved: an index-only scan).
    sa.Index(
        "ix_approval_requests_auto_service",
        "service",
        "decided_at",
        postgresql_where=sa.text(AUTO_DECIDED),
        sqlite_where=sa.text(AUTO_DECIDED),
        postgresql_include=["decided_by"],
    ),
    sa.Index(None, "incident_id", "status"),
    sa.Index(None, "created_at", "id"),
    sa.Index(None, "status", "created_at"),
    sa.Index(None, "decided_at"),
)

# Precedent: people's decisions on an action (ignoring case) by fingerprint or by service,
# by time. The action is in the key, so a busy service's other actions are not read; on
# PostgreSQL the rest of what the policy reads is in the index too, so the read is an
# index-only scan once the table is vacuumed. ``action`` itself is included although only
# ``lower(action)`` is read: PostgreSQL plans an index-only scan only when every column
# the query names is in the index, and it does not look inside the expression.
for _key in ("fingerprint", "service"):
    sa.Index(
        f"ix_approval_requests_human_{_key}",
        requests.c[_key],
        sa.func.lower(requests.c.action),
        requests.c.decided_at,
        postgresql_where=sa.text(HUMAN_DECIDED),
        sqlite_where=sa.text(HUMAN_DECIDED),
        postgresql_include=["disposition", "outcome_succeeded", "action"],
    )

# Approver groups: who is in which. A member removed is kept, with when and by whom.
group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("group_name", sa.String(64), nullable=False),
    sa.Column("member", sa.String(200), nullable=False),
    sa.Column("added_at", UTCDateTime(), nullable=False),
    sa.Column("added_by", sa.Text(), nullable=False),
    sa.Column("removed_at", UTCDateTime(), nullable=True),
    sa.Column("removed_by", sa.Text(), nullable=True),
    # One current membership per person and group; the removed ones are history.
    sa.Index(
        "uq_group_members_current", "group_name", "member", unique=True,
        postgresql_where=sa.text("removed_at IS NULL"),
        sqlite_where=sa.text("removed_at IS NULL"),
    ),
    sa.Index(
        "ix_group_members_member_current", "member",
        postgresql_where=sa.text("removed_at IS NULL"),
        sqlite_where=sa.text("removed_at IS NULL"),
    ),
)

# Single-use links: one request, one approver, the secret stored hashed.
links = sa.Table(
    "links",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("request_id", sa.Uuid(), sa.ForeignKey("approval_requests.id"), nullable=False),
    sa.Column("principal", sa.String(200), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("created_by", sa.Text(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime(), nullable=True),
    sa.Index(None, "request_id"),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("request_id", sa.Uuid(), sa.ForeignKey("approval_requests.id"), primary_key=True),
    sa.Column("approver", sa.Text(), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("actor", sa.Text(), nullable=False),
    sa.Column("request_id", sa.Uuid(), sa.ForeignKey("approval_requests.id"), nullable=True),
    sa.Column("incident_id", sa.Uuid(), sa.ForeignKey("incidents.id"), nullable=True),
    sa.Column("from_status", sa.String(16), nullable=True),
    sa.Column("to_status", sa.String(16), nullable=True),
    sa.Column("detail", JSONType, nullable=True),
    sa.Index(None, "request_id", "id"),
    sa.Index(None, "incident_id", "id"),
)

knowledge = sa.Table(
    "knowledge_entries",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    # Exactly one entry per incident resolution: the constraint makes a second one fail.
    sa.Column(
        "incident_id", sa.Uuid(), sa.ForeignKey("incidents.id"), nullable=False, unique=True
    ),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("service", sa.Text(), nullable=True),
    sa.Column("fingerprint", sa.Text(), nullable=True),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("resolution_type", sa.String(32), nullable=False),
    sa.Column("disposition", sa.String(32), nullable=True),
    sa.Column("actions", JSONType, nullable=False),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Index(None, "created_at", "id"),
    sa.Index(None, "service", "created_at"),
    sa.Index(None, "fingerprint", "created_at"),
)

# Notifications waiting to be delivered, delivered, or given up on. Written in the same
# transaction as the change that causes them; rows are never deleted.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("request_id", sa.Uuid(), sa.ForeignKey("approval_requests.id"), nullable=True),
    sa.Column("incident_id", sa.Uuid(), sa.ForeignKey("incidents.id"), nullable=True),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    # Items that must happen once (a card, a final edit, a reminder) carry a key.
    sa.Column("dedupe_key", sa.Text(), nullable=True, unique=True),
    sa.Index(
        "ix_outbox_pending_next_attempt",
        "next_attempt_at",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    ),
    sa.Index(None, "request_id", "id"),
    sa.Index(None, "status", "created_at"),
)

# A chat message that shows a request (a Telegram card), so that it can be edited later.
cards = sa.Table(
    "cards",
    metadata,
    sa.Column("request_id", sa.Uuid(), sa.ForeignKey("approval_requests.id"), primary_key=True),
    sa.Column("channel", sa.String(32), primary_key=True),
    sa.Column("chat_id", sa.Text(), nullable=False),
    sa.Column("message_id", sa.BigInteger(), nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=False),
    sa.Column("final_at", UTCDateTime(), nullable=True),
)

# The policy's kill switch: a row per pause, closed by its resume (never deleted). At most
# one is open; every replica reads it in the transaction that would auto-approve.
policy_pauses = sa.Table(
    "policy_pauses",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("paused_by", sa.Text(), nullable=False),
    sa.Column("paused_at", UTCDateTime(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("resumed_by", sa.Text(), nullable=True),
    sa.Column("resumed_at", UTCDateTime(), nullable=True),
    # True while open, NULL once resumed: unique, so a second open pause cannot exist.
    sa.Column("open", sa.Boolean(), nullable=True, unique=True),
)

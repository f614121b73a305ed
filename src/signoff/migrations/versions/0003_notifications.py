"""notifications: outbox, cards, needs_analysis, reminders

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 21:43:13.313746
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_PENDING = sa.text("status = 'pending'")
_REMINDER = sa.text("status = 'pending' AND next_reminder_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "cards",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("chat_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("final_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"], ["approval_requests.id"],
            name=op.f("fk_cards_request_id_approval_requests"),
        ),
        sa.PrimaryKeyConstraint("request_id", "channel", name=op.f("pk_cards")),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
            nullable=False,
        ),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=True),
        sa.Column("incident_id", sa.Uuid(), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dedupe_key", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_outbox_incident_id_incidents")
        ),
        sa.ForeignKeyConstraint(
            ["request_id"], ["approval_requests.id"],
            name=op.f("fk_outbox_request_id_approval_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_outbox_dedupe_key")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_pending_next_attempt", ["next_attempt_at"], unique=False,
            postgresql_where=_PENDING, sqlite_where=_PENDING,
        )
        batch_op.create_index(
            batch_op.f("ix_outbox_request_id_id"), ["request_id", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_outbox_status_created_at"), ["status", "created_at"], unique=False
        )

    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("needs_analysis", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("next_reminder_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_approval_requests_pending_reminder", ["next_reminder_at"], unique=False,
            postgresql_where=_REMINDER, sqlite_where=_REMINDER,
        )


def downgrade() -> None:
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_approval_requests_pending_reminder",
            postgresql_where=_REMINDER, sqlite_where=_REMINDER,
        )
        batch_op.drop_column("next_reminder_at")
        batch_op.drop_column("needs_analysis")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_status_created_at"))
        batch_op.drop_index(batch_op.f("ix_outbox_request_id_id"))
        batch_op.drop_index(
            "ix_outbox_pending_next_attempt", postgresql_where=_PENDING, sqlite_where=_PENDING
        )

    op.drop_table("outbox")
    op.drop_table("cards")

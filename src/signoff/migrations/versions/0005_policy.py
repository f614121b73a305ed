"""policy: the evaluation on each request, precedent and limit indexes, the kill switch

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 03:30:00.000000

A request keeps its incident's fingerprint and service (copied at create: an incident's
never change), so that precedent (people's decisions by fingerprint or service) and a
rule's limit (the policy's approvals for a service in a trailing window) are index range
scans with no join. Existing requests get theirs from their incidents.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

HUMAN_DECIDED = sa.text("disposition IN ('human_approved', 'human_rejected')")
AUTO_DECIDED = sa.text("disposition = 'auto_repair'")


def upgrade() -> None:
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fingerprint", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("service", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("policy", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE approval_requests SET "
        "fingerprint = (SELECT i.fingerprint FROM incidents i "
        "WHERE i.id = approval_requests.incident_id), "
        "service = (SELECT i.service FROM incidents i WHERE i.id = approval_requests.incident_id) "
        "WHERE incident_id IS NOT NULL"
    )
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_approval_requests_human_fingerprint", ["fingerprint", "decided_at"],
            unique=False, postgresql_where=HUMAN_DECIDED, sqlite_where=HUMAN_DECIDED,
        )
        batch_op.create_index(
            "ix_approval_requests_human_service", ["service", "decided_at"],
            unique=False, postgresql_where=HUMAN_DECIDED, sqlite_where=HUMAN_DECIDED,
        )
        batch_op.create_index(
            "ix_approval_requests_auto_service", ["service", "decided_at"],
            unique=False, postgresql_where=AUTO_DECIDED, sqlite_where=AUTO_DECIDED,
        )
    op.create_table(
        "policy_pauses",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
            nullable=False,
        ),
        sa.Column("paused_by", sa.Text(), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("resumed_by", sa.Text(), nullable=True),
        sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("open", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_pauses")),
        sa.UniqueConstraint("open", name=op.f("uq_policy_pauses_open")),
    )


def downgrade() -> None:
    op.drop_table("policy_pauses")
    with op.batch_alter_table("approval_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_approval_requests_auto_service")
        batch_op.drop_index("ix_approval_requests_human_service")
        batch_op.drop_index("ix_approval_requests_human_fingerprint")
        batch_op.drop_column("policy")
        batch_op.drop_column("service")
        batch_op.drop_column("fingerprint")

"""precedent: people's decisions indexed by action too

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 15:00:00.000000

Precedent reads people's decisions on one action (ignoring case) for a fingerprint or a
service. The indexes of 0005 were by fingerprint (or service) and time only, so a busy
service's decisions on every other action were read from the table and thrown away. The
action, lower-cased, is now part of each key; on PostgreSQL the index also carries the
disposition and reported outcome, so the read needs no table row once it is vacuumed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

HUMAN_DECIDED = sa.text("disposition IN ('human_approved', 'human_rejected')")
KEYS = ("fingerprint", "service")


def upgrade() -> None:
    for key in KEYS:
        name = f"ix_approval_requests_human_{key}"
        op.drop_index(name, table_name="approval_requests")
        op.create_index(
            name, "approval_requests", [key, sa.text("lower(action)"), "decided_at"],
            unique=False, postgresql_where=HUMAN_DECIDED, sqlite_where=HUMAN_DECIDED,
            postgresql_include=["disposition", "outcome_succeeded"],
        )


def downgrade() -> None:
    for key in KEYS:
        name = f"ix_approval_requests_human_{key}"
        op.drop_index(name, table_name="approval_requests")
        op.create_index(
            name, "approval_requests", [key, "decided_at"],
            unique=False, postgresql_where=HUMAN_DECIDED, sqlite_where=HUMAN_DECIDED,
        )

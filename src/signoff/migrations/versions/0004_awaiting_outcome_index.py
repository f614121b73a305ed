"""an index of approved requests still waiting for their outcome

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 00:10:00.000000

The watchdog for approved requests with no outcome (W-3), and the doctor's and the
orphaned-incident watchdog's notion of a live request, look for approved requests whose
outcome is not reported yet. Those are few; the approved requests of all time are not.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHERE = "status = 'approved' AND outcome_at IS NULL"


def upgrade() -> None:
    op.create_index(
        "ix_approval_requests_awaiting_outcome",
        "approval_requests",
        ["decided_at"],
        postgresql_where=sa.text(WHERE),
        sqlite_where=sa.text(WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_approval_requests_awaiting_outcome", table_name="approval_requests")

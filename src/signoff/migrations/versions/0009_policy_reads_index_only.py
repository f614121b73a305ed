"""policy: its reads answered from the indexes alone

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 01:30:00.000000

The precedent indexes of 0008 carried the disposition and the reported outcome, but
PostgreSQL still read a table row for each decision: it plans an index-only scan only when
every column a query names is in the index, and the precedent read names ``action``
(inside ``lower(action)``, which is the key). A service's twenty-odd decisions were as many
table pages. The column is now included, and the limits' index carries the rule that
approved (``decided_by``), so both reads need no table row once the table is vacuumed.
Only PostgreSQL's indexes change: SQLite's have no included columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

HUMAN_DECIDED = sa.text("disposition IN ('human_approved', 'human_rejected')")
AUTO_DECIDED = sa.text("disposition = 'auto_repair'")
KEYS = ("fingerprint", "service")


def _indexes(human_include: list[str], auto_include: list[str]) -> None:
    for key in KEYS:
        name = f"ix_approval_requests_human_{key}"
        op.drop_index(name, table_name="approval_requests")
        op.create_index(
            name, "approval_requests", [key, sa.text("lower(action)"), "decided_at"],
            unique=False, postgresql_where=HUMAN_DECIDED, sqlite_where=HUMAN_DECIDED,
            postgresql_include=human_include,
        )
    op.drop_index("ix_approval_requests_auto_service", table_name="approval_requests")
    op.create_index(
        "ix_approval_requests_auto_service", "approval_requests", ["service", "decided_at"],
        unique=False, postgresql_where=AUTO_DECIDED, sqlite_where=AUTO_DECIDED,
        postgresql_include=auto_include,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _indexes(["disposition", "outcome_succeeded", "action"], ["decided_by"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _indexes(["disposition", "outcome_succeeded"], [])

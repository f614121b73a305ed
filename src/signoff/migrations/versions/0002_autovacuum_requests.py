"""autovacuum of approval_requests by dead rows, not by table size

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 21:45:00.000000

Requests are never deleted, and each one is updated once or twice (decided, expired, its
outcome): the table grows for ever while its dead rows come at the pace of the traffic.
PostgreSQL's default waits for dead rows to reach a fifth of the table before vacuuming,
so the older the service, the more dead index entries the resolver's claim on the
pending-deadline index must step over between vacuums. A fixed threshold keeps that
number small however large the history. PostgreSQL only; SQLite has no autovacuum.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OPTIONS = {
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": "1000",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    settings = ", ".join(f"{name} = {value}" for name, value in OPTIONS.items())
    op.execute(f"ALTER TABLE approval_requests SET ({settings})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE approval_requests RESET ({', '.join(OPTIONS)})")

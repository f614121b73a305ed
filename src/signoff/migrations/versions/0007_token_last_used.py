"""when each token was last used

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-07 03:55:00.000000

``signoff token list`` and ``GET /api/v1/tokens`` show when a token was last used, so that
a team can see which tokens are idle before revoking them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("last_used_at")

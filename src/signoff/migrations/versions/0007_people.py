"""who may decide: when tokens were last used, approver groups, approvers per request

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-07 03:55:00.000000

- ``tokens.last_used_at``: ``signoff token list`` and ``GET /api/v1/tokens`` show when a
  token was last used, so that a team sees which tokens are idle before revoking them.
- ``group_members``: approver groups (``signoff group add|remove``); a member removed is
  kept, with when and by whom.
- ``approval_requests.approvers``: the principals and ``group:NAME`` entries that alone may
  decide a request; NULL for any approver (every request made before).
- ``links``: single-use links to decide one request as one approver, secrets hashed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None

CURRENT = "removed_at IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column(
            "approvers", sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True), "postgresql"), nullable=True))
    op.create_table(
        "group_members",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("group_name", sa.String(length=64), nullable=False),
        sa.Column("member", sa.String(length=200), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.Text(), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_members")),
    )
    op.create_index("uq_group_members_current", "group_members", ["group_name", "member"],
                    unique=True, postgresql_where=sa.text(CURRENT),
                    sqlite_where=sa.text(CURRENT))
    op.create_index("ix_group_members_member_current", "group_members", ["member"],
                    postgresql_where=sa.text(CURRENT), sqlite_where=sa.text(CURRENT))
    op.create_table(
        "links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("principal", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["approval_requests.id"],
                                name=op.f("fk_links_request_id_approval_requests")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_links_secret_hash")),
    )
    op.create_index(op.f("ix_links_request_id"), "links", ["request_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_links_request_id"), table_name="links")
    op.drop_table("links")
    op.drop_index("ix_group_members_member_current", table_name="group_members")
    op.drop_index("uq_group_members_current", table_name="group_members")
    op.drop_table("group_members")
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("approvers")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("last_used_at")

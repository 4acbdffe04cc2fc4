"""Access certificates, warnings and freezes (issue 10).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # New tables only: nothing existing is altered.
    op.create_table(
        "access_grants",
        sa.Column("serial", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("key_id", sa.String(255), nullable=False),
        sa.Column("engineer", sa.String(255), nullable=False),
        sa.Column("key_fingerprint", sa.String(128), nullable=False),
        sa.Column("principals", sa.JSON, nullable=False),
        sa.Column("sites", sa.JSON, nullable=False),
        sa.Column("valid_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("granted_by", sa.String(255), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("certificate", sa.Text, nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(255), nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=True),
        sa.UniqueConstraint("key_id", name="uq_access_key_id"),
    )
    op.create_index("ix_access_grants_engineer", "access_grants", ["engineer"])
    op.create_table(
        "site_sanctions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied", sa.Boolean, nullable=False),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    )
    op.create_index("ix_site_sanctions_site_at", "site_sanctions", ["site", "at"])


def downgrade() -> None:
    op.drop_index("ix_site_sanctions_site_at", table_name="site_sanctions")
    op.drop_table("site_sanctions")
    op.drop_index("ix_access_grants_engineer", table_name="access_grants")
    op.drop_table("access_grants")

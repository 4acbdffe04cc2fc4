"""Restore verifications: every real restore test of a backup (clauses 6.1.2, 6.1.4.1, 10.4).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "restore_verifications",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("repo", sa.String(32), nullable=True),
        sa.Column("backup_label", sa.String(128), nullable=True),
        sa.Column("recovery_point", sa.String(255), nullable=True),
        sa.Column("recovery_time", sa.String(64), nullable=True),
        sa.Column("restore_duration_s", sa.Float, nullable=True),
        sa.Column("checks", sa.JSON, nullable=True),
    )
    op.create_index("ix_restore_verifications_host_time", "restore_verifications", ["host", "verified_at"])


def downgrade() -> None:
    op.drop_index("ix_restore_verifications_host_time", table_name="restore_verifications")
    op.drop_table("restore_verifications")

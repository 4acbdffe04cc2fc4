"""Compliance audits and hardening (issue 10): one row per audited site.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: nothing existing is altered.
    op.create_table(
        "compliance_audits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("audited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("lynis_index", sa.Integer, nullable=True),
        sa.Column("failed", sa.JSON, nullable=False),
        sa.Column("drift", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=False),
    )
    op.create_index("ix_compliance_audits_site_time", "compliance_audits", ["site", "audited_at"])


def downgrade() -> None:
    op.drop_index("ix_compliance_audits_site_time", table_name="compliance_audits")
    op.drop_table("compliance_audits")

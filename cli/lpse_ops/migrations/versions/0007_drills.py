"""Runbook runs and DR drills (issue 9): one row per drill with its measured RTO/RPO and timeline.

Runbook runs themselves are plain runs (``runbook.run`` with a child run per step, ``runs.parent_id``):
only the drills need a table of their own.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: nothing existing is altered, so nothing is copied on SQLite.
    op.create_table(
        "drills",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("scenario", sa.String(64), nullable=False),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ok", sa.Boolean, nullable=True),
        sa.Column("failed_step", sa.String(128), nullable=True),
        sa.Column("rto_s", sa.Float, nullable=True),
        sa.Column("rpo_db_s", sa.Float, nullable=True),
        sa.Column("rpo_docs_s", sa.Float, nullable=True),
        sa.Column("targets", sa.JSON, nullable=False),
        sa.Column("met", sa.Boolean, nullable=True),
        sa.Column("timeline", sa.JSON, nullable=False),
        sa.Column("detail", sa.JSON, nullable=True),
    )
    op.create_index("ix_drills_started_at", "drills", ["started_at"])
    op.create_index("ix_drills_site", "drills", ["site"])


def downgrade() -> None:
    op.drop_index("ix_drills_site", table_name="drills")
    op.drop_index("ix_drills_started_at", table_name="drills")
    op.drop_table("drills")

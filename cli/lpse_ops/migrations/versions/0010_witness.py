"""Audit-log witness progress (issue 11): how far each witness bucket has received the chain's head.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only. It is bookkeeping, not evidence: the witness bucket itself is the record, and
    # `audit-log verify --witness` reads the bucket, never this table.
    op.create_table(
        "audit_witness_progress",
        sa.Column("target", sa.String(512), primary_key=True),
        sa.Column("witnessed_seq", sa.Integer, nullable=True),
        sa.Column("witnessed_hash", sa.String(64), nullable=True),
        sa.Column("witnessed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("audit_witness_progress")

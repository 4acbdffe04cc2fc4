"""Parent run ids: a rollout groups its waves, a wave its per-site steps, a drill its steps.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN, never a table copy: batch mode would drop and recreate ``runs`` on SQLite, and
    # with foreign keys on, that cascades into run_hosts. SQLite takes REFERENCES in ADD COLUMN; Alembic
    # does not emit it there, so that dialect gets the statement as written.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE runs ADD COLUMN parent_id INTEGER REFERENCES runs (id) ON DELETE SET NULL")
    else:
        op.add_column("runs", sa.Column("parent_id", sa.Integer,
                                        sa.ForeignKey("runs.id", name="fk_runs_parent_id", ondelete="SET NULL"),
                                        nullable=True))
    op.create_index("ix_runs_parent_id", "runs", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_parent_id", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("parent_id")

"""Site probes: each site's facts and faults from every ``fleet status``, kept for trends.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: no existing table is altered, so nothing is copied on SQLite.
    op.create_table(
        "site_probes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("probed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reachable", sa.Boolean, nullable=False),
        sa.Column("error", sa.String(32), nullable=True),
        sa.Column("spse_version", sa.String(64), nullable=True),
        sa.Column("fault_codes", sa.JSON, nullable=False),
        sa.Column("disk_used_percent", sa.Float, nullable=True),
        sa.Column("memory_available_percent", sa.Float, nullable=True),
        sa.Column("load_5m", sa.Float, nullable=True),
        sa.Column("cpus", sa.Integer, nullable=True),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("facts", sa.JSON, nullable=False),
    )
    op.create_index("ix_site_probes_host_time", "site_probes", ["host", "probed_at"])
    op.create_index("ix_site_probes_run_id", "site_probes", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_site_probes_run_id", table_name="site_probes")
    op.drop_index("ix_site_probes_host_time", table_name="site_probes")
    op.drop_table("site_probes")

"""Incidents and service requests (issue 11; clauses 7.1, 7.6, 7.7): the records and their history.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # New tables only: no existing table is altered, so nothing is copied on SQLite.
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("site", sa.String(255), nullable=False),
        sa.Column("site_name", sa.String(255), nullable=False),
        sa.Column("site_timezone", sa.String(64), nullable=False),
        sa.Column("priority", sa.String(4), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("impact", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_by", sa.String(255), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("responded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("response_due", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolution_due", sa.DateTime(timezone=True), nullable=False),
        sa.Column("response_target_s", sa.Integer, nullable=False),
        sa.Column("resolution_target_s", sa.Integer, nullable=False),
        sa.Column("run_ids", sa.JSON, nullable=False),
        sa.Column("detail", sa.JSON, nullable=True),
    )
    op.create_index("ix_incidents_opened_at", "incidents", ["opened_at"])
    op.create_index("ix_incidents_site", "incidents", ["site"])
    op.create_index("ix_incidents_status", "incidents", ["status"])
    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=True),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("detail", sa.JSON, nullable=True),
    )
    op.create_index("ix_incident_events_incident", "incident_events", ["incident_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_incident_events_incident", table_name="incident_events")
    op.drop_table("incident_events")
    op.drop_index("ix_incidents_status", table_name="incidents")
    op.drop_index("ix_incidents_site", table_name="incidents")
    op.drop_index("ix_incidents_opened_at", table_name="incidents")
    op.drop_table("incidents")

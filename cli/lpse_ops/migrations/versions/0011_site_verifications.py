"""Verifications a site ran itself (its timer) reach the store once: the site's own id, where it came from.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot add a unique constraint to an existing table otherwise.
    with op.batch_alter_table("restore_verifications") as batch:
        batch.add_column(sa.Column("site_verification_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("source", sa.String(16), nullable=True))
        batch.add_column(sa.Column("detail", sa.JSON, nullable=True))
        batch.create_unique_constraint("uq_restore_verifications_site_id", ["host", "site_verification_id"])


def downgrade() -> None:
    with op.batch_alter_table("restore_verifications") as batch:
        batch.drop_constraint("uq_restore_verifications_site_id", type_="unique")
        batch.drop_column("detail")
        batch.drop_column("source")
        batch.drop_column("site_verification_id")

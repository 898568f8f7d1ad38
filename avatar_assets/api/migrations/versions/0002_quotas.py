"""Quotas: a token bucket per tenant and action class, and per-tenant limits."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_buckets",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("action", sa.String(32), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "quota_limits",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("action", sa.String(32), primary_key=True),
        sa.Column("burst", sa.Integer, nullable=False),
        sa.Column("per_hour", sa.Float, nullable=False),
    )

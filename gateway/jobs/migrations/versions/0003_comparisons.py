"""Comparisons (one input on several models, each arm a job), human votes on them; the
experiment a job's arm came from, and the per-day shadow budget of experiments; API keys as
data (hashed), each job's estimated cost (what budgets reserve), its input blob and when its
files expire (retention).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "comparisons",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False, server_default=""),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("arms", sa.JSON, nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_comparisons_owner_idempotency_key"),
    )
    op.create_index("ix_comparisons_owner_created", "comparisons", ["owner", "created_at"])
    op.create_table(
        "votes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("comparison_id", sa.String(40), sa.ForeignKey("comparisons.id", ondelete="CASCADE"), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False, server_default=""),
        sa.Column("voter", sa.String(128), nullable=False, server_default=""),
        sa.Column("choice", sa.String(16), nullable=False),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("comparison_id", "owner", "voter", name="uq_votes_comparison_voter"),
    )
    op.create_index("ix_votes_comparison_id", "votes", ["comparison_id"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("comparison_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("experiment", sa.String(64), nullable=True))
        batch.add_column(sa.Column("estimate_usd", sa.Float, nullable=True))
        batch.add_column(sa.Column("input_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.Float, nullable=True))
    op.create_index("ix_jobs_comparison_id", "jobs", ["comparison_id"])
    op.create_index("ix_jobs_experiment", "jobs", ["experiment"])
    op.create_index("ix_jobs_input_sha256", "jobs", ["input_sha256"])
    op.create_index("ix_jobs_expires_at", "jobs", ["expires_at"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("concurrency", sa.Integer, nullable=True),
        sa.Column("budget_usd", sa.Float, nullable=True),
        sa.Column("period", sa.String(8), nullable=False, server_default="month"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("rotated_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_table(
        "rate_windows",
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("minute", sa.Integer, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "shadow_budget",
        sa.Column("experiment", sa.String(64), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("jobs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("usd", sa.Float, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("rate_windows")
    op.drop_table("api_keys")
    op.drop_table("shadow_budget")
    op.drop_index("ix_jobs_expires_at", "jobs")
    op.drop_index("ix_jobs_input_sha256", "jobs")
    op.drop_index("ix_jobs_experiment", "jobs")
    op.drop_index("ix_jobs_comparison_id", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("input_sha256")
        batch.drop_column("estimate_usd")
        batch.drop_column("experiment")
        batch.drop_column("comparison_id")
    op.drop_table("votes")
    op.drop_table("comparisons")

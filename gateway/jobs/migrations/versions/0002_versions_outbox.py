"""Job versions and the adapter a job needs; attempt cancel requests; the outbox.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("adapter", sa.String(64), nullable=True))
    op.create_index("ix_jobs_claim", "jobs", ["status", "adapter", "lease_until"])
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("cancel_requested_at", sa.Float, nullable=True))
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("done_at", sa.Float, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("log", sa.JSON, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
    )
    op.create_index("ix_outbox_job_id", "outbox", ["job_id"])
    op.create_index("ix_outbox_status_next", "outbox", ["status", "next_at"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_index("ix_jobs_claim", "jobs")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("cancel_requested_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("adapter")
        batch.drop_column("version")

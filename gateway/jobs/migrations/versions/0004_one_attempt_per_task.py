"""A provider task belongs to one attempt: a unique index on (adapter, provider_task_id).

Two attempts that each looked for their lost submit in a provider's task list at the same moment
(after a crash in a burst of one prompt) could both adopt the same task: one task, counted on two
jobs. With the index the second write fails and that attempt ends `unconfirmed` instead.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("uq_attempts_adapter_task", "attempts", ["adapter", "provider_task_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_attempts_adapter_task", table_name="attempts")

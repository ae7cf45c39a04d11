"""A job's progress clock and each batch's delivery count, for recovery without the broker's help.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Written by hand from `alembic revision --autogenerate`. `jobs.progressed_at` is when a batch last stored rows
(the re-queue sweep re-sends the missing reviews of a job whose clock stopped); existing jobs take their last
known time. `batch_deliveries` counts the starts of a batch that never came back, so a batch that kills its
worker every time is given up instead of redelivered forever.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batch_deliveries",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("first_review_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("starts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_batch_deliveries_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "first_review_id", "size", name=op.f("pk_batch_deliveries")),
    )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("progressed_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET progressed_at = COALESCE(finished_at, started_at, created_at)")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("progressed_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("progressed_at")
    op.drop_table("batch_deliveries")

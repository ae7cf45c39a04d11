"""The deletion test and the methods' agreement, stored with each explanation; the job's options and time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Written by hand from `alembic revision --autogenerate`. Each explanation row gains its review's deletion
record (the explained class's probability as float32 and the predicted class as int8, packed bytes like the
relevance columns) and its agreement figures (float32 per pair of methods): stored in the row itself, so the
row's idempotent insert also keeps a redone batch from counting a review twice. Jobs gain the test's options
(`faithfulness`, `faithfulness_every`) and the seconds it took; existing jobs had no test: off, every review,
no time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("explanations") as batch_op:
        batch_op.add_column(sa.Column("deletion_probability", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("deletion_predicted", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("agreement_spearman", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("agreement_overlap", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("faithfulness_seconds", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("faithfulness", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("faithfulness_every", sa.Integer(), nullable=True))
    op.execute("UPDATE jobs SET faithfulness_seconds = 0, faithfulness = false, faithfulness_every = 1")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("faithfulness_seconds", existing_type=sa.Float(), nullable=False)
        batch_op.alter_column("faithfulness", existing_type=sa.Boolean(), nullable=False)
        batch_op.alter_column("faithfulness_every", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("faithfulness_every")
        batch_op.drop_column("faithfulness")
        batch_op.drop_column("faithfulness_seconds")
    with op.batch_alter_table("explanations") as batch_op:
        batch_op.drop_column("agreement_overlap")
        batch_op.drop_column("agreement_spearman")
        batch_op.drop_column("deletion_predicted")
        batch_op.drop_column("deletion_probability")

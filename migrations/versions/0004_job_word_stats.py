"""A finished job's word statistics in the database, so that any web process on any host serves any job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Written by hand from `alembic revision --autogenerate`. `job_word_stats` holds one row per finished job: the
arrays of `shared.jobs.word_stats` as one `.npz` blob and the version of the job's rows they were computed
from. Until now they were `.npz` and PNG files under each host's instance folder; those files are no longer
read (delete the instance folder's `word-stats/` at will). Nothing to copy: the statistics are computed again
on a job's first view.

PostgreSQL stores the blob without trying to compress it (STORAGE EXTERNAL): its arrays are mostly floats and
review positions, which pglz barely shrinks; writing the 33 MB of a 25,000-review job took 1.1 s with the
attempt, 0.4 s without.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_word_stats",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_word_stats_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_word_stats")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE job_word_stats ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("job_word_stats")

"""The job service schema: datasets, reviews, jobs and one explanation row per (job, review).

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Written by hand from `alembic revision --autogenerate` and reviewed: relevance vectors, token ids and spans
are raw little-endian float32/int32 bytes (LargeBinary: bytea on PostgreSQL, BLOB on SQLite), and the
primary key (job_id, review_id) is the unique pair the batch upserts rely on.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("review_count", sa.Integer(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_datasets")),
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=32), nullable=True),
        sa.Column("label", sa.SmallInteger(), nullable=True),
        sa.Column("rating", sa.SmallInteger(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name=op.f("fk_reviews_dataset_datasets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    op.create_index("ix_reviews_dataset_id", "reviews", ["dataset", "id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("dataset", sa.String(length=32), nullable=True),
        sa.Column("review_limit", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(length=16), nullable=False),
        sa.Column("methods", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("correct", sa.Integer(), nullable=False),
        sa.Column("labelled", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("model_checksum", sa.String(length=64), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("engine_seconds", sa.Float(), nullable=False),
        sa.Column("render_seconds", sa.Float(), nullable=False),
        sa.Column("write_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('dataset', 'texts')", name=op.f("ck_jobs_kind_known")),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_jobs_status_known"),
        ),
        sa.ForeignKeyConstraint(["dataset"], ["datasets.name"], name=op.f("fk_jobs_dataset_datasets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_table(
        "explanations",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.String(length=64), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("true_class", sa.SmallInteger(), nullable=True),
        sa.Column("predicted_class", sa.SmallInteger(), nullable=True),
        sa.Column("target_class", sa.SmallInteger(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("logits", sa.LargeBinary(), nullable=True),
        sa.Column("probabilities", sa.LargeBinary(), nullable=True),
        sa.Column("token_ids", sa.LargeBinary(), nullable=True),
        sa.Column("tokens", sa.Text(), nullable=True),
        sa.Column("spans", sa.LargeBinary(), nullable=True),
        sa.Column("lrp", sa.LargeBinary(), nullable=True),
        sa.Column("sa", sa.LargeBinary(), nullable=True),
        sa.Column("gi", sa.LargeBinary(), nullable=True),
        sa.Column("lrp_rest", sa.Float(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=True),
        sa.Column("heatmap_html", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_explanations_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["review_id"], ["reviews.id"], name=op.f("fk_explanations_review_id_reviews")
        ),
        sa.PrimaryKeyConstraint("job_id", "review_id", name=op.f("pk_explanations")),
    )
    op.create_index("ix_explanations_job_confidence", "explanations", ["job_id", "confidence"])
    op.create_index(
        "ix_explanations_job_predicted", "explanations", ["job_id", "predicted_class", "true_class"]
    )


def downgrade() -> None:
    op.drop_table("explanations")
    op.drop_table("jobs")
    op.drop_index("ix_reviews_dataset_id", table_name="reviews")
    op.drop_table("reviews")
    op.drop_table("datasets")

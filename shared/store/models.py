"""The tables, as SQLAlchemy 2.0 typed models shared by the web process, the workers and Alembic."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so that Alembic's autogenerate and hand-written migrations agree on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _PackedArray(TypeDecorator[npt.NDArray[Any]]):
    """A 1-D NumPy array stored as raw little-endian bytes: 4 bytes a value instead of ~10 as JSON text."""

    impl = LargeBinary
    cache_ok = True
    dtype: np.dtype[Any] = np.dtype("<f4")

    def process_bind_param(self, value: npt.NDArray[Any] | None, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        return np.ascontiguousarray(value, dtype=self.dtype).tobytes()

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> npt.NDArray[Any] | None:
        if value is None:
            return None
        return np.frombuffer(value, dtype=self.dtype)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases (SQLite would hand back naive datetimes)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Float32Array(_PackedArray):
    cache_ok = True  # not inherited: SQLAlchemy asks each subclass, else statements are never cached
    dtype = np.dtype("<f4")


class Int32Array(_PackedArray):
    cache_ok = True
    dtype = np.dtype("<i4")


class Int8Array(_PackedArray):
    cache_ok = True
    dtype = np.dtype("i1")


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Dataset(Base):
    """An imported labelled split, e.g. "imdb-test"."""

    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    split: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)  # the folder or file it was read from
    review_count: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Review(Base):
    """One review text: a dataset review ("test/pos/0_10") or a submitted text ("texts/<job>/<n>")."""

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_dataset_id", "dataset", "id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str | None] = mapped_column(ForeignKey("datasets.name"))
    label: Mapped[int | None] = mapped_column(SmallInteger)  # 1 = positive; None for submitted texts
    rating: Mapped[int | None] = mapped_column(SmallInteger)
    text: Mapped[str] = mapped_column(Text)


class Job(Base):
    """A bulk explanation job with its progress counters (bumped by each batch in its own transaction)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status_known"
        ),
        CheckConstraint("kind IN ('dataset', 'texts')", name="kind_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    dataset: Mapped[str | None] = mapped_column(ForeignKey("datasets.name"))
    review_limit: Mapped[int | None] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(16))  # "predicted" or a class index
    methods: Mapped[str] = mapped_column(String(32))  # comma-separated subset of lrp,sa,gi
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)  # explained successfully
    failed: Mapped[int] = mapped_column(Integer, default=0)
    correct: Mapped[int] = mapped_column(Integer, default=0)  # predicted class == label, for accuracy
    labelled: Mapped[int] = mapped_column(Integer, default=0)  # explained reviews that have a label
    batch_size: Mapped[int] = mapped_column(Integer)
    model_checksum: Mapped[str] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    # Seconds summed over all batches, to show where the time goes.
    engine_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    render_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    write_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    faithfulness_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # deletion test and agreement
    # The deletion test (`shared.jobs.faithfulness`): on or off, and which reviews (every n-th, by id hash).
    faithfulness: Mapped[bool] = mapped_column(Boolean, default=False)
    faithfulness_every: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a batch last started or stored rows (or the job was created or re-queued): the sweep's clock.
    progressed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def method_list(self) -> list[str]:
        return self.methods.split(",")


class Explanation(Base):
    """What the model says about one review in one job; unique on (job, review) so redone batches upsert."""

    __tablename__ = "explanations"
    __table_args__ = (
        Index("ix_explanations_job_confidence", "job_id", "confidence"),
        Index("ix_explanations_job_predicted", "job_id", "predicted_class", "true_class"),
    )

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    review_id: Mapped[str] = mapped_column(ForeignKey("reviews.id"), primary_key=True)
    error: Mapped[str | None] = mapped_column(Text)  # set when this review failed; the rest is then empty
    true_class: Mapped[int | None] = mapped_column(SmallInteger)
    predicted_class: Mapped[int | None] = mapped_column(SmallInteger)
    target_class: Mapped[int | None] = mapped_column(SmallInteger)
    confidence: Mapped[float | None] = mapped_column(Float)  # probability of the predicted class
    logits: Mapped[npt.NDArray[np.float32] | None] = mapped_column(Float32Array)
    probabilities: Mapped[npt.NDArray[np.float32] | None] = mapped_column(Float32Array)
    token_ids: Mapped[npt.NDArray[np.int32] | None] = mapped_column(Int32Array)
    tokens: Mapped[str | None] = mapped_column(Text)  # newline-joined: a newline never occurs in a token
    spans: Mapped[npt.NDArray[np.int32] | None] = mapped_column(Int32Array)  # start, end, start, end, ...
    lrp: Mapped[npt.NDArray[np.float32] | None] = mapped_column(Float32Array)
    sa: Mapped[npt.NDArray[np.float32] | None] = mapped_column(Float32Array)
    gi: Mapped[npt.NDArray[np.float32] | None] = mapped_column(Float32Array)
    lrp_rest: Mapped[float | None] = mapped_column(Float)
    truncated: Mapped[bool | None]
    heatmap_html: Mapped[str | None] = mapped_column(Text)  # LRP heatmap, escaped tokens, one span each
    # The deletion test's record (`shared.relevance.faithfulness.DeletionCurves`, one review), flattened
    # (D, R, K+1): the explained class's probability and the predicted class; None if not evaluated.
    deletion_probability: Mapped[npt.NDArray[np.float32] | None] = mapped_column(Float32Array)
    deletion_predicted: Mapped[npt.NDArray[np.int8] | None] = mapped_column(Int8Array)
    # The methods' agreement (`shared.relevance.agreement`) per pair of PAIRS, NaN where undefined.
    agreement_spearman: Mapped[npt.NDArray[np.float32] | None] = mapped_column(Float32Array)
    agreement_overlap: Mapped[npt.NDArray[np.float32] | None] = mapped_column(Float32Array)


class BatchDelivery(Base):
    """How often a batch of a job was started with reviews still to do, counted before it works: a batch
    whose starts never came back (its process was killed, or ran out of time) is given up after a few."""

    __tablename__ = "batch_deliveries"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    first_review_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer, primary_key=True)
    starts: Mapped[int] = mapped_column(Integer)


class JobWordStats(Base):
    """A finished job's word statistics (`shared.jobs.word_stats`), computed once and read by every web
    process on any host: the arrays as one NumPy `.npz` blob, valid while `version` names the job's rows."""

    __tablename__ = "job_word_stats"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    data: Mapped[bytes] = mapped_column(LargeBinary)

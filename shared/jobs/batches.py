"""One batch of a job: the pure functions behind the worker task.

A batch explains those of its reviews that have no row yet (with the methods' agreement and, for a sample,
the deletion test: `shared.jobs.faithfulness`, stored in the same rows), then in ONE transaction inserts
their rows (ON CONFLICT (job_id, review_id) DO NOTHING, so a batch delivered twice at once adds nothing) and
bumps the job's counters by the rows it really inserted; the transaction that brings done + failed to the
total marks the job succeeded. Before it works, a batch counts its start in `batch_deliveries` (a start that
ends in a transient database error is refunded): a batch started more than `max_deliveries` times never came
back each time (its process was killed or timed out), so it is split into single reviews, and a single
review is stored as failed.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np
import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import TypeDecorator, exists, select, update
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.jobs.faithfulness import review_figures
from shared.jobs.lifecycle import fail_job, parse_target
from shared.relevance.explainer import ExplainedReview, Explainer
from shared.render.heatmap import render_heatmap
from shared.store.db import insert_for
from shared.store.models import FINISHED, BatchDelivery, Explanation, Job, JobStatus, Review, utcnow

# What a database that is restarting, unreachable, deadlocked or locked raises: worth retrying the batch.
# The same from psycopg itself: the COPY of `copy_rows` talks to the driver directly.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
DATABASE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, psycopg.Error, sqlite3.Error)
COLUMNS = [column.name for column in Explanation.__table__.columns]  # an explanation row's, in table order


def interrupted(exc: BaseException) -> bool:
    """Whether a database error only followed something else raised in the middle of a statement (a time
    limit): the driver's connection was left busy, so the error says nothing about the database."""
    links, seen = [exc], set()
    while links:
        link = links.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        if not isinstance(link, DATABASE_ERRORS):
            return True
        links += [e for e in (link.__cause__, link.__context__) if e is not None]
    return False


def error_summary(exc: BaseException) -> str:
    """The error's class and first line; for a database error, the driver's (SQLAlchemy's own message
    repeats the statement with every parameter: whole heatmaps)."""
    origin = getattr(exc, "orig", None) or exc
    first_line = next(iter(str(origin).splitlines()), "")
    return f"{type(origin).__name__}: {first_line}"


class ReviewText(Protocol):
    """What a batch reads of a review (a row of `reviews`)."""

    id: str
    text: str
    label: int | None


@dataclass(frozen=True)
class BatchOutcome:
    """What a batch did, for the worker's log line; `split` holds the batches to send in its place."""

    summary: str
    split: tuple[list[str], ...] = ()


def explanation_values(
    job_id: int, review: ReviewText, result: ExplainedReview | str, methods: list[str]
) -> dict[str, Any]:
    """The row of one explained (or failed) review; the stored heatmap shows the first method (LRP)."""
    row = dict.fromkeys(COLUMNS)
    row.update(job_id=job_id, review_id=review.id, true_class=review.label)
    if isinstance(result, str):
        row["error"] = result
        return row
    e, t = result.explanation, result.tokenized
    # (2 L,) start, end, ...: np.asarray of the list of pairs costs as much as the heatmap's markup.
    spans = np.fromiter(itertools.chain.from_iterable(t.spans), dtype=np.int32, count=2 * len(t.spans))
    row.update(
        predicted_class=e.predicted_class,
        target_class=e.target_class,
        confidence=float(e.probabilities[e.predicted_class]),
        logits=e.logits,
        probabilities=e.probabilities,
        token_ids=np.asarray(t.token_ids),
        tokens="\n".join(t.tokens),
        spans=spans,
        lrp_rest=e.lrp_rest,
        truncated=result.truncated,
    )
    for method in methods:
        row[method] = getattr(e, method)
    values = getattr(e, methods[0])
    heatmap = render_heatmap(review.text, spans.reshape(-1, 2), values, truncated=result.truncated)
    row["heatmap_html"] = str(heatmap)
    return row


def pending_reviews(session: Session, job_id: int, review_ids: Sequence[str]) -> list[Any]:
    """The batch's reviews (id, text, label) that have no row in this job yet, in id order."""
    stored = exists().where(Explanation.job_id == job_id, Explanation.review_id == Review.id)
    query = select(Review.id, Review.text, Review.label).where(Review.id.in_(review_ids), ~stored)
    return list(session.execute(query.order_by(Review.id)).all())


def record_start(session_factory: sessionmaker[Session], job_id: int, review_ids: Sequence[str]) -> int:
    """Count a start of this batch (and start the job, or move its progress clock); returns the count."""
    key = {"job_id": job_id, "first_review_id": review_ids[0], "size": len(review_ids)}
    with session_factory.begin() as session:
        starts: int = session.execute(
            insert_for(session)(BatchDelivery)
            .values(**key, starts=1)
            .on_conflict_do_update(index_elements=list(key), set_={"starts": BatchDelivery.starts + 1})
            .returning(BatchDelivery.starts)
        ).scalar_one()
        now = utcnow()
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(status=JobStatus.RUNNING, started_at=now)
        )
        session.execute(update(Job).where(Job.id == job_id).values(progressed_at=now))
    return starts


def refund_start(session_factory: sessionmaker[Session], job_id: int, review_ids: Sequence[str]) -> None:
    """Take back a start that ended in an error the batch survived (it is retried, not lost)."""
    with session_factory.begin() as session:
        session.execute(
            update(BatchDelivery)
            .where(
                BatchDelivery.job_id == job_id,
                BatchDelivery.first_review_id == review_ids[0],
                BatchDelivery.size == len(review_ids),
            )
            .values(starts=BatchDelivery.starts - 1)
        )


# What the insert returns of each row it really inserted (not of those already there): for the counters.
INSERTED = (Explanation.error, Explanation.predicted_class, Explanation.true_class)
# Bound values of columns whose Python value is not the database's (the packed arrays: NumPy -> bytes).
CONVERTERS = {
    column.name: column.type.process_bind_param
    for column in Explanation.__table__.columns
    if isinstance(column.type, TypeDecorator)
}
STAGING = "explanations_in"
# With the table's own (lz4) compression: the default, pglz, made the COPY twice as slow.
STAGING_TABLE = f"CREATE TEMPORARY TABLE {STAGING} (LIKE explanations INCLUDING COMPRESSION) ON COMMIT DROP"
COPY_INTO_STAGING = f"COPY {STAGING} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
STAGING_TYPES = (
    f"SELECT attname, atttypid FROM pg_attribute WHERE attrelid = '{STAGING}'::regclass AND attnum > 0"
)
INSERT_FROM_STAGING = (
    f"INSERT INTO explanations ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM {STAGING}"
    f" ON CONFLICT (job_id, review_id) DO NOTHING RETURNING {', '.join(c.key for c in INSERTED)}"
)


def copy_rows(session: Session, rows: list[dict[str, Any]]) -> list[Any]:
    """PostgreSQL: the rows in binary COPY into a temporary table of this transaction, then one INSERT ...
    SELECT ... ON CONFLICT DO NOTHING RETURNING of the rows really inserted (so a batch stored twice at
    once adds nothing, as with the INSERT of SQLite). Half the time of the executemany INSERT: 0.09 s
    instead of 0.17-0.2 s for 500 rows. The job's row is not locked before the INSERT, as before."""
    connection = session.connection()
    dialect = connection.dialect
    driver = cast(psycopg.Connection[Any], connection.connection.driver_connection)
    with driver.cursor(row_factory=namedtuple_row) as cursor:
        cursor.execute(STAGING_TABLE)
        types = {name: oid for name, oid in driver.execute(STAGING_TYPES)}
        plan = [(name, CONVERTERS.get(name)) for name in COLUMNS]
        with cursor.copy(COPY_INTO_STAGING) as copy:
            copy.set_types([types[name] for name in COLUMNS])
            for row in rows:
                copy.write_row(
                    [row[name] if convert is None else convert(row[name], dialect) for name, convert in plan]
                )
        return cursor.execute(INSERT_FROM_STAGING).fetchall()


def store_rows(
    session_factory: sessionmaker[Session],
    job_id: int,
    rows: list[dict[str, Any]],
    seconds: tuple[float, float, float],
) -> str:
    """Insert the rows that are not there yet and bump the job's counters by them, in one transaction;
    `seconds` is the time the rows took to explain, to render and to test (deletion and agreement).
    Returns a summary for the log."""
    started = time.perf_counter()
    with session_factory.begin() as session:
        inserted: Sequence[Any]
        if session.get_bind().dialect.name == "postgresql":
            inserted = copy_rows(session, rows)
        else:  # executemany ("insertmanyvalues"): one cached statement; returns the rows it really inserted
            statement = (
                insert_for(session)(Explanation)
                .on_conflict_do_nothing(index_elements=["job_id", "review_id"])
                .returning(*INSERTED)
            )
            inserted = session.execute(statement, rows).all()
        ok = [r for r in inserted if r.error is None]
        labelled = [r for r in ok if r.true_class is not None]
        now = utcnow()
        counters = session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                done=Job.done + len(ok),
                failed=Job.failed + len(inserted) - len(ok),
                labelled=Job.labelled + len(labelled),
                correct=Job.correct + sum(r.predicted_class == r.true_class for r in labelled),
                engine_seconds=Job.engine_seconds + seconds[0],
                render_seconds=Job.render_seconds + seconds[1],
                faithfulness_seconds=Job.faithfulness_seconds + seconds[2],
                write_seconds=Job.write_seconds + (time.perf_counter() - started),
                progressed_at=now,
            )
            .returning(Job.done, Job.failed, Job.total)
        ).one()
        if counters.done + counters.failed >= counters.total:
            # Conditional: a job cancelled (or failed) before this commit keeps that status.
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.not_in(FINISHED))
                .values(status=JobStatus.SUCCEEDED, finished_at=now)
            )
    return f"stored {len(inserted)} of {len(rows)} rows ({len(inserted) - len(ok)} failed)"


def fail_reviews(
    session_factory: sessionmaker[Session], job_id: int, review_ids: Sequence[str], reason: str
) -> BatchOutcome:
    """Store the batch's reviews that have no row yet as failed with the reason (the job goes on)."""
    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is None or job.status in FINISHED:
            return BatchOutcome(f"skipped: job {job_id} is {'gone' if job is None else job.status}")
        methods = job.method_list
        reviews = pending_reviews(session, job_id, review_ids)
    rows = [explanation_values(job_id, review, reason[:2000], methods) for review in reviews]
    return BatchOutcome(f"{store_rows(session_factory, job_id, rows, (0.0, 0.0, 0.0))}: {reason}")


def run_batch(
    session_factory: sessionmaker[Session],
    explainer: Explainer,
    job_id: int,
    review_ids: Sequence[str],
    *,
    max_deliveries: int,
) -> BatchOutcome:
    """Explain and store one batch of a job; safe to run twice, or at once in two places."""
    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is None or job.status in FINISHED:
            return BatchOutcome(f"skipped: job {job_id} is {'gone' if job is None else job.status}")
        if job.model_checksum != explainer.weights.checksum:
            message = (
                f"worker model {explainer.weights.checksum[:12]} is not the job's {job.model_checksum[:12]}"
            )
            fail_job(session_factory, job_id, message)
            return BatchOutcome(f"failed: {message}")
        methods, target = job.method_list, parse_target(job.target)
        every = job.faithfulness_every if job.faithfulness else None
        reviews = pending_reviews(session, job_id, review_ids)
    if not reviews:
        return BatchOutcome(f"nothing to do: all {len(review_ids)} reviews are stored")

    starts = record_start(session_factory, job_id, review_ids)
    if starts > max_deliveries:
        reason = f"given up after {starts - 1} deliveries that never finished (killed, or out of time)"
        if len(reviews) > 1:  # one review is the poison, most likely: let each show which
            return BatchOutcome(f"split into single reviews: {reason}", tuple([r.id] for r in reviews))
        return fail_reviews(session_factory, job_id, review_ids, reason)

    started = time.perf_counter()
    results = explainer.explain([r.text for r in reviews], target)
    explained = time.perf_counter()
    figures = review_figures(explainer.forward_model, [r.id for r in reviews], results, every)
    tested = time.perf_counter()
    rows = [
        explanation_values(job_id, r, result, methods) | extra
        for r, result, extra in zip(reviews, results, figures, strict=True)
    ]
    seconds = (explained - started, time.perf_counter() - tested, tested - explained)
    try:
        return BatchOutcome(store_rows(session_factory, job_id, rows, seconds))
    except TRANSIENT_ERRORS as exc:
        if not interrupted(exc):
            with contextlib.suppress(*TRANSIENT_ERRORS):  # a database still away keeps the count: rare
                refund_start(session_factory, job_id, review_ids)
        raise

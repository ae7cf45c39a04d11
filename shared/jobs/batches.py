"""One batch of a job: the pure function behind the worker task.

A batch explains its reviews, then in ONE transaction inserts its rows (ON CONFLICT (job_id, review_id) DO
NOTHING, so a redelivered batch adds nothing) and bumps the job's counters by the rows it really inserted;
the transaction that brings done + failed to the total marks the job succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.jobs.lifecycle import fail_job, parse_target
from shared.relevance.explainer import ExplainedReview, Explainer
from shared.render.heatmap import render_heatmap
from shared.store.db import insert_for
from shared.store.models import FINISHED, Explanation, Job, JobStatus, Review, utcnow


class ReviewText(Protocol):
    """What a batch reads of a review (a row of `reviews`)."""

    id: str
    text: str
    label: int | None


def explanation_values(
    job_id: int, review: ReviewText, result: ExplainedReview | str, methods: list[str]
) -> dict[str, Any]:
    """The row of one explained (or failed) review; the stored heatmap shows the first method (LRP)."""
    row: dict[str, Any] = {c.name: None for c in Explanation.__table__.columns}
    row.update(job_id=job_id, review_id=review.id, true_class=review.label)
    if isinstance(result, str):
        row["error"] = result
        return row
    e, t = result.explanation, result.tokenized
    row.update(
        predicted_class=e.predicted_class,
        target_class=e.target_class,
        confidence=float(e.probabilities[e.predicted_class]),
        logits=e.logits,
        probabilities=e.probabilities,
        token_ids=np.asarray(t.token_ids),
        tokens="\n".join(t.tokens),
        spans=np.asarray(t.spans).reshape(-1),
        lrp_rest=e.lrp_rest,
        truncated=result.truncated,
    )
    for method in methods:
        row[method] = getattr(e, method)
    values = getattr(e, methods[0])
    row["heatmap_html"] = str(render_heatmap(review.text, t.spans, values, truncated=result.truncated))
    return row


def run_batch(
    session_factory: sessionmaker[Session], explainer: Explainer, job_id: int, review_ids: Sequence[str]
) -> str:
    """Explain and store one batch of a job; safe to run twice. Returns what happened, for the worker log."""
    with session_factory() as session:
        job = session.get(Job, job_id)
        if job is None or job.status in FINISHED:
            return f"skipped: job {job_id} is {'gone' if job is None else job.status}"
        if job.model_checksum != explainer.weights.checksum:
            message = (
                f"worker model {explainer.weights.checksum[:12]} is not the job's {job.model_checksum[:12]}"
            )
            fail_job(session_factory, job_id, message)
            return f"failed: {message}"
        methods, target = job.method_list, parse_target(job.target)
        if job.status == JobStatus.QUEUED:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                .values(status=JobStatus.RUNNING, started_at=utcnow())
            )
            session.commit()
        reviews = session.execute(
            select(Review.id, Review.text, Review.label).where(Review.id.in_(review_ids)).order_by(Review.id)
        ).all()

    started = time.perf_counter()
    results = explainer.explain([r.text for r in reviews], target)
    explained = time.perf_counter()
    rows = [
        explanation_values(job_id, r, result, methods) for r, result in zip(reviews, results, strict=True)
    ]
    rendered = time.perf_counter()

    with session_factory.begin() as session:
        # executemany ("insertmanyvalues"): one cached statement; returns the rows it really inserted.
        statement = (
            insert_for(session)(Explanation)
            .on_conflict_do_nothing(index_elements=["job_id", "review_id"])
            .returning(Explanation.error, Explanation.predicted_class, Explanation.true_class)
        )
        inserted = session.execute(statement, rows).all()
        written = time.perf_counter()
        ok = [r for r in inserted if r.error is None]
        labelled = [r for r in ok if r.true_class is not None]
        counters = session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                done=Job.done + len(ok),
                failed=Job.failed + len(inserted) - len(ok),
                labelled=Job.labelled + len(labelled),
                correct=Job.correct + sum(r.predicted_class == r.true_class for r in labelled),
                engine_seconds=Job.engine_seconds + (explained - started),
                render_seconds=Job.render_seconds + (rendered - explained),
                write_seconds=Job.write_seconds + (written - rendered),
            )
            .returning(Job.done, Job.failed, Job.total, Job.status)
        ).one()
        if counters.done + counters.failed >= counters.total and counters.status not in FINISHED:
            session.execute(
                update(Job).where(Job.id == job_id).values(status=JobStatus.SUCCEEDED, finished_at=utcnow())
            )
    return f"stored {len(inserted)} of {len(rows)} rows ({len(inserted) - len(ok)} failed)"

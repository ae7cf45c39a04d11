"""Re-queueing what stalled: the database, not the broker, knows which reviews of a job are still to do.

A job's reviews still to do are those of its dataset (its first `total`, in id order) or its texts without a
row in `explanations`. A job whose progress clock (`jobs.progressed_at`, moved by every batch that starts or
stores) has not moved for `stall_seconds` lost its batches somewhere (a broker restarted empty, a worker
machine that died with batches in hand): the sweep sends its missing reviews again, in batches of the job's
size. Doing a review twice is harmless (a batch skips stored reviews; inserts ignore duplicates).

A queued job may simply be waiting behind another job's batches, so queued jobs are only re-sent when no job
at all has made progress in that time. The sweep claims a job by moving its clock (a conditional update),
so two sweeps at once send its batches once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.store.db import chunked
from shared.store.models import Explanation, Job, JobStatus, Review, utcnow


@dataclass(frozen=True)
class Requeued:
    """One stalled job the sweep re-sent: how many reviews, in how many batches."""

    job_id: int
    reviews: int
    batches: int


def missing_reviews(session: Session, job: Job) -> list[str]:
    """The job's review ids without a row yet, in id order."""
    if job.kind == "texts":  # a texts job's reviews are its own: ids texts/<job id>/<n>
        candidates = select(Review.id).where(Review.id.startswith(f"texts/{job.id}/", autoescape=True))
    else:
        candidates = (
            select(Review.id).where(Review.dataset == job.dataset).order_by(Review.id).limit(job.total)
        )
    ids = candidates.subquery()
    stored = exists().where(Explanation.job_id == job.id, Explanation.review_id == ids.c.id)
    return list(session.scalars(select(ids.c.id).where(~stored).order_by(ids.c.id)))


def requeue_stalled(
    session_factory: sessionmaker[Session],
    send: Callable[[int, list[str]], None],
    stall_seconds: float,
    now: datetime | None = None,
) -> list[Requeued]:
    """Send again the missing reviews of every job stalled for `stall_seconds`; `send(job_id, review_ids)`
    queues one batch. Returns what was re-sent, for the log."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=stall_seconds)
    with session_factory() as session:
        service_busy = session.scalar(select(exists().where(Job.progressed_at >= cutoff)))
        statuses = [JobStatus.RUNNING] if service_busy else [JobStatus.QUEUED, JobStatus.RUNNING]
        stalled = select(Job.id).where(Job.status.in_(statuses), Job.progressed_at < cutoff).order_by(Job.id)
        job_ids = list(session.scalars(stalled))
    requeued = []
    for job_id in job_ids:
        with session_factory.begin() as session:
            claim = (
                update(Job)
                .where(Job.id == job_id, Job.status.in_(statuses), Job.progressed_at < cutoff)
                .values(progressed_at=now)
                .returning(Job.id)
            )
            if session.execute(claim).first() is None:  # finished, or claimed by another sweep meanwhile
                continue
            job = session.get_one(Job, job_id)
            missing, batch_size = missing_reviews(session, job), job.batch_size
        batches = list(chunked(missing, batch_size))
        for batch in batches:
            send(job_id, batch)
        requeued.append(Requeued(job_id, len(missing), len(batches)))
    return requeued

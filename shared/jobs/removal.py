"""Deleting a job: its explanation rows, the texts submitted with it, then the job itself."""

from __future__ import annotations

import contextlib

from sqlalchemy import delete
from sqlalchemy.orm import Session

from shared.jobs.lifecycle import ConflictError, cancel_job, get_job
from shared.store.models import FINISHED, Explanation, Job, Review


def delete_job(session: Session, job_id: int) -> None:
    """Remove the job and its rows. A queued or running job is cancelled first (committed on its own, with
    cancel_job's conditional update, so a batch finishing the job meanwhile is not overwritten), so its
    remaining batches skip their work; the rows are deleted explicitly (SQLite does not cascade)."""
    job = get_job(session, job_id)
    if job.status not in FINISHED:
        with contextlib.suppress(ConflictError):  # it finished meanwhile: nothing left to stop
            cancel_job(session, job_id)
    session.execute(delete(Explanation).where(Explanation.job_id == job_id))
    if job.kind == "texts":  # a texts job's reviews are its own: ids texts/<job id>/<n>
        prefix = f"texts/{job_id}/"
        session.execute(delete(Review).where(Review.id.startswith(prefix, autoescape=True)))
    session.execute(delete(Job).where(Job.id == job_id))
    session.commit()

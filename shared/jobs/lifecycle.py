"""A job's life: checking and creating it (split into batches of review ids), cancelling and failing it,
its progress. Running one batch is `shared.jobs.batches`. Cancelling sets the status, which every batch
checks before it starts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.relevance.methods import METHODS
from shared.relevance.weights import load_weights
from shared.store.db import chunked, insert_for
from shared.store.models import FINISHED, Dataset, Job, JobStatus, Review, utcnow

PREDICTED = "predicted"
DEFAULT_EVERY = 4  # a dataset job's deletion test: every 4th review (the full test costs ~5x the explanation)


class JobRequestError(ValueError):
    """A job or review that cannot be: `code` is a short machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFoundError(JobRequestError):
    """No such job, dataset or explanation."""


class ConflictError(JobRequestError):
    """The job is not in a state that allows this."""


@dataclass(frozen=True)
class JobSpec:
    """What to explain: a dataset (optionally its first `limit` reviews) or the given texts."""

    dataset: str | None = None
    texts: tuple[str, ...] | None = None
    limit: int | None = None
    methods: tuple[str, ...] = METHODS
    target: str = PREDICTED  # "predicted" or a class index
    faithfulness: bool | None = None  # the deletion test; None: on for a dataset job, off for texts
    faithfulness_every: int | None = None  # test every n-th review; None: DEFAULT_EVERY (dataset) or 1


@dataclass(frozen=True)
class ModelInfo:
    checksum: str
    class_names: tuple[str, ...]


@functools.cache
def model_info(model_path: Path) -> ModelInfo:
    """The checksum and classes of the model file the workers will load (read once per process)."""
    weights = load_weights(model_path)
    return ModelInfo(weights.checksum, tuple(weights.class_names))


def parse_target(target: str) -> int | None:
    return None if target == PREDICTED else int(target)


def check_spec(spec: JobSpec, info: ModelInfo, max_texts: int, max_text_chars: int) -> None:
    """Raise JobRequestError for anything the workers could not do."""
    if (spec.dataset is None) == (spec.texts is None):
        raise JobRequestError("invalid_request", 'give exactly one of "dataset" and "texts"')
    if (
        not spec.methods
        or any(m not in METHODS for m in spec.methods)
        or len(set(spec.methods)) != len(spec.methods)
    ):
        raise JobRequestError("invalid_methods", f"methods must be distinct names from {list(METHODS)}")
    check_target(spec.target, info)
    if spec.faithfulness_every is not None and spec.faithfulness_every < 1:
        raise JobRequestError("invalid_faithfulness_every", "faithfulness_every must be a positive integer")
    if spec.limit is not None and spec.limit < 1:
        raise JobRequestError("invalid_limit", "limit must be a positive integer")
    if spec.texts is not None:
        if not spec.texts:
            raise JobRequestError("invalid_texts", "texts must not be empty")
        if len(spec.texts) > max_texts:
            raise JobRequestError("too_many_texts", f"at most {max_texts} texts per job")
        check_text_sizes(spec.texts, max_text_chars)


def check_target(target: str, info: ModelInfo) -> None:
    classes = [str(c) for c in range(len(info.class_names))]
    if target != PREDICTED and target not in classes:
        raise JobRequestError("invalid_target", f'target must be "{PREDICTED}" or one of {classes}')


def check_text_sizes(texts: Sequence[str], max_text_chars: int) -> None:
    for number, text in enumerate(texts):
        if not text.strip():
            raise JobRequestError("empty_text", f"text {number} is empty")
        if len(text) > max_text_chars:
            raise JobRequestError(
                "text_too_long", f"text {number} is longer than {max_text_chars} characters"
            )


def create_job(
    session: Session, spec: JobSpec, info: ModelInfo, *, batch_size: int, max_texts: int, max_text_chars: int
) -> tuple[Job, list[list[str]]]:
    """Add the job (and a texts job's reviews) to the session; returns it with its batches of review ids.
    The caller commits, then enqueues one task per batch."""
    check_spec(spec, info, max_texts, max_text_chars)
    dataset_job = spec.dataset is not None
    job = Job(
        kind="dataset" if dataset_job else "texts",
        dataset=spec.dataset,
        review_limit=spec.limit,
        target=spec.target,
        methods=",".join(spec.methods),
        status=JobStatus.QUEUED,
        total=0,
        batch_size=batch_size,
        model_checksum=info.checksum,
        faithfulness=dataset_job if spec.faithfulness is None else spec.faithfulness,
        faithfulness_every=spec.faithfulness_every or (DEFAULT_EVERY if dataset_job else 1),
    )
    if spec.dataset is not None:
        if session.get(Dataset, spec.dataset) is None:
            raise JobRequestError(
                "unknown_dataset", f"no dataset {spec.dataset!r}; run `relevance import-imdb`"
            )
        query = select(Review.id).where(Review.dataset == spec.dataset).order_by(Review.id).limit(spec.limit)
        review_ids = list(session.scalars(query))
        session.add(job)
        session.flush()
    else:
        assert spec.texts is not None  # check_spec: exactly one of dataset and texts
        session.add(job)
        session.flush()  # the job id names its reviews
        review_ids = [f"texts/{job.id}/{n}" for n in range(len(spec.texts))]
        session.execute(
            insert_for(session)(Review),
            [
                {"id": i, "dataset": None, "label": None, "rating": None, "text": t}
                for i, t in zip(review_ids, spec.texts, strict=True)
            ],
        )
    job.total = len(review_ids)
    if not review_ids:
        raise JobRequestError("empty_dataset", f"dataset {spec.dataset!r} has no reviews")
    return job, list(chunked(review_ids, batch_size))


def fail_job(session_factory: sessionmaker[Session], job_id: int, message: str) -> None:
    """Mark a job failed (unless it already finished) with the reason."""
    with session_factory.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.not_in(FINISHED))
            .values(status=JobStatus.FAILED, error=message[:2000], finished_at=utcnow())
        )


def cancel_job(session: Session, job_id: int) -> Job:
    """Stop a queued or running job: batches not yet started skip their work; finished rows stay. One
    conditional update, so a cancel racing the last batch loses to a job that has just succeeded (409)."""
    job = get_job(session, job_id)
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.not_in(FINISHED))
        .values(status=JobStatus.CANCELLED, finished_at=utcnow())
        .returning(Job.id)
    ).first()
    session.commit()
    session.refresh(job)  # what the update found: cancelled now, or what finished first
    if cancelled is None:
        raise ConflictError("job_finished", f"job {job_id} is already {job.status}")
    return job


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFoundError("job_not_found", f"no job {job_id}")
    return job


@dataclass(frozen=True)
class Progress:
    """How far a job is and how fast it goes."""

    percent: float
    elapsed_seconds: float | None
    reviews_per_second: float | None
    eta_seconds: float | None
    accuracy: float | None


def progress(job: Job, now: datetime | None = None) -> Progress:
    processed = job.done + job.failed
    percent = 100.0 * processed / job.total if job.total else 100.0
    accuracy = job.correct / job.labelled if job.labelled else None
    if job.started_at is None:
        return Progress(percent, None, None, None, accuracy)
    end = job.finished_at or now or utcnow()
    elapsed = max((end - job.started_at).total_seconds(), 1e-9)
    rate = processed / elapsed
    eta = (job.total - processed) / rate if rate > 0 and job.status not in FINISHED else None
    return Progress(percent, elapsed, rate, eta, accuracy)

"""The tasks: thin wrappers that take ids (or one text) and call the pure functions in `shared/`.

A batch never fails its job: a database that refuses it (restarting, deadlocked) gets it retried with
exponential backoff; a batch that still fails after every retry, or fails another way, stores its reviews as
failed with the reason. A batch out of time goes back to the queue, where its delivery count gives it up.
"""

from __future__ import annotations

import os
import time
from typing import Any, cast

import orjson
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import worker_init, worker_ready
from celery.utils.log import get_task_logger
from celery.worker import WorkController
from sqlalchemy.orm import Session, sessionmaker

from shared.jobs.batches import TRANSIENT_ERRORS, error_summary, fail_reviews, interrupted, run_batch
from shared.jobs.export import jsonl_line, review_record
from shared.jobs.lifecycle import check_text_sizes, parse_target
from shared.jobs.queue import BULK_QUEUE, EXPLAIN_BATCH, EXPLAIN_TEXT, REQUEUE_STALLED, RETRY_BACKOFF_MAX
from shared.jobs.recovery import requeue_stalled
from shared.jobs.word_stats import prepare_when_finished
from shared.render.heatmap import render_heatmap
from shared.store.db import make_engine, session_factory
from worker.app import app, explainer, settings

log = get_task_logger(__name__)
BULK_NICENESS = 10  # added to a bulk-only worker's niceness: ~1/10 of the CPU share of the others when busy


def explain_batch(task: Task[Any, Any], job_id: int, review_ids: list[str]) -> None:
    """One batch of a bulk job; logs one line (job, reviews, seconds, what happened)."""
    started = time.perf_counter()
    sessions = session_factory(settings.effective_database_url)
    try:
        outcome = run_batch(sessions, explainer(), job_id, review_ids, max_deliveries=settings.max_deliveries)
    except (SoftTimeLimitExceeded, *TRANSIENT_ERRORS) as exc:
        if isinstance(exc, SoftTimeLimitExceeded) or interrupted(exc):  # the limit hit inside a statement
            log.warning(
                "batch job=%d reviews=%d out of time after %.1f s", job_id, len(review_ids), _since(started)
            )
            raise Reject(exc, requeue=True) from exc  # its start stays counted: given up in time
        if task.request.retries < settings.batch_retries:
            log.warning(
                "batch job=%d reviews=%d will be retried: %s", job_id, len(review_ids), error_summary(exc)
            )
            raise  # autoretry_for: again after an exponential backoff
        reason = f"failed after {task.request.retries} retries: {error_summary(exc)}"
        outcome = fail_reviews(sessions, job_id, review_ids, reason)
    except Exception as exc:  # not the database's moment: retrying would fail the same way
        log.exception("batch job=%d reviews=%d failed", job_id, len(review_ids))
        outcome = fail_reviews(sessions, job_id, review_ids, f"batch failed: {error_summary(exc)}")
    for batch in outcome.split:
        send_batch(job_id, batch)
    log.info(
        "batch job=%d reviews=%d seconds=%.3f %s", job_id, len(review_ids), _since(started), outcome.summary
    )
    with sessions() as session:  # the web UI's word statistics, ready before anyone opens the job
        prepare_when_finished(session, job_id)


def _since(started: float) -> float:
    return time.perf_counter() - started


def explain_text(text: str, target: str) -> dict[str, Any]:
    """One review now (the interactive queue): the export record plus its LRP heatmap."""
    check_text_sizes([text], settings.max_text_chars)
    (result,) = explainer().explain([text], parse_target(target))
    if isinstance(result, str):
        return {"error": result}
    record = review_record(None, result)
    record["heatmap_html"] = render_heatmap(
        text, result.tokenized.spans, result.explanation.lrp, truncated=result.truncated
    )
    # The result backend speaks JSON: let orjson turn the NumPy arrays into plain lists.
    return cast(dict[str, Any], orjson.loads(jsonl_line(record)))


def lower_bulk_priority(sender: WorkController, **_: Any) -> None:
    """A worker that serves the bulk queue only runs at a lower CPU priority (its pool processes inherit it),
    so that on a few cores the interactive worker, the web server and PostgreSQL (which the batches wait for
    too) go first; the bulk work takes what they leave. A worker serving both queues keeps its priority."""
    if set(sender.app.amqp.queues.consume_from or ()) == {BULK_QUEUE}:
        os.nice(BULK_NICENESS)


def requeue() -> int:
    """Send again the missing reviews of stalled jobs (beat's schedule); returns how many."""
    return requeue_from(session_factory(settings.effective_database_url))


def requeue_on_start(**_: Any) -> None:
    """A worker that starts re-sends what stalled while none ran. On an engine of its own: the main process
    forks the pool's processes, which must not inherit its connections."""
    engine = make_engine(settings.effective_database_url)
    try:
        requeue_from(sessionmaker(engine))
    except Exception:  # the worker serves anyway; beat's schedule tries again
        log.exception("the start-up re-queue sweep failed")
    finally:
        engine.dispose()


def requeue_from(sessions: sessionmaker[Session]) -> int:
    requeued = requeue_stalled(sessions, send_batch, settings.stall_seconds)
    for job in requeued:
        log.warning("job=%d stalled: re-sent %d reviews in %d batches", job.job_id, job.reviews, job.batches)
    return sum(job.reviews for job in requeued)


def send_batch(job_id: int, review_ids: list[str]) -> None:
    app.send_task(EXPLAIN_BATCH, args=[job_id, review_ids], queue=BULK_QUEUE)


explain_batch_task = app.task(
    name=EXPLAIN_BATCH,
    bind=True,
    ignore_result=True,
    autoretry_for=TRANSIENT_ERRORS,
    max_retries=settings.batch_retries,
    retry_backoff=True,
    retry_backoff_max=RETRY_BACKOFF_MAX,
    # No jitter: 1, 2, 4 ... 30 s, so the retries surely span BATCH_RETRIES' two minutes (random waits ended a
    # few batches' retries within a 20 s outage); the workers' few processes bound the burst when it ends.
    retry_jitter=False,
)(explain_batch)
explain_text_task = app.task(name=EXPLAIN_TEXT)(explain_text)
requeue_task = app.task(name=REQUEUE_STALLED, ignore_result=True)(requeue)
worker_ready.connect(requeue_on_start)
worker_init.connect(lower_bulk_priority)

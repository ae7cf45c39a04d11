"""A worker stopped with SIGTERM mid-job (warm shutdown), a cancel racing the batch that completes a job, two
jobs over the same reviews at once, and a plain worker serving both queues; on PostgreSQL and the machine's
Redis."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select

from shared.jobs.lifecycle import ConflictError, JobSpec, cancel_job
from shared.jobs.queue import BULK_QUEUE, EXPLAIN_TEXT, INTERACTIVE_QUEUE
from shared.store.models import BatchDelivery, Explanation
from tests.faults.harness import Deployment, deployment_settings, fresh_database
from tests.helpers.service import REDIS_TEST_URL


@pytest.fixture
def deployment(tmp_path: Path, model: Path, imdb_5k: Path) -> Iterator[Deployment]:
    """PostgreSQL and the machine's Redis, batches of 100, no sweep within a test (so what a test sees
    is the broker's and the batches' doing)."""
    with fresh_database() as url:
        settings = deployment_settings(
            tmp_path, model, imdb_5k, url, REDIS_TEST_URL, batch_size=100, stall_seconds=600
        )
        running = Deployment(settings, tmp_path)
        try:
            yield running
        finally:
            running.stop()


def test_sigterm_finishes_the_batches_in_hand_and_leaves_the_rest_to_the_next_worker(
    deployment: Deployment,
) -> None:
    first = deployment.start_worker("first")
    job_id = deployment.submit_until(JobSpec(dataset="imdb-test", limit=3_000), 600)
    first.popen.send_signal(signal.SIGTERM)
    assert first.popen.wait(timeout=60) == 0

    rows_at_exit, _ = deployment.rows(job_id)
    with deployment.sessions() as session:
        started = list(session.scalars(select(BatchDelivery).where(BatchDelivery.job_id == job_id)))
    assert 0 < rows_at_exit < 3_000
    assert rows_at_exit == 100 * len(started)  # every batch that started finished: none cut short

    deployment.start_worker("next")
    deployment.wait_for_job(job_id, deadline=60)
    deployment.assert_complete(job_id, 3_000)
    assert deployment.max_starts(job_id) == 1  # the rest came from the queue, nothing was redone
    print(f"\nSIGTERM: the first worker stopped at {rows_at_exit} rows; the next one did the rest")


def blocked_backends(url: str, lock_type: str) -> int:
    """How many sessions of this database wait for a lock of the given type."""
    with psycopg.connect(url, autocommit=True) as connection:
        query = """SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE NOT l.granted AND l.locktype = %s AND a.datname = current_database()"""
        (count,) = connection.execute(query, [lock_type]).fetchone() or (0,)
        return int(count)


# Batches wait on the test's advisory lock 7 at one point of their final transaction: before inserting their
# rows (the cancel comes first) or after bumping the counters that complete the job (the batch comes first).
PAUSE_BEFORE_ROWS = """
CREATE FUNCTION pause() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock_shared(7); RETURN NULL; END $$;
CREATE TRIGGER pause BEFORE INSERT ON explanations FOR EACH STATEMENT EXECUTE FUNCTION pause();
"""
PAUSE_AFTER_COMPLETION = """
CREATE FUNCTION pause() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock_shared(7); RETURN NULL; END $$;
CREATE TRIGGER pause AFTER UPDATE ON jobs FOR EACH ROW
  WHEN (NEW.done + NEW.failed >= NEW.total AND OLD.done + OLD.failed < OLD.total) EXECUTE FUNCTION pause();
"""


@pytest.mark.parametrize("first", ["cancel", "last batch"])
def test_cancel_racing_the_last_batch_ends_as_whichever_came_first(
    deployment: Deployment, first: str
) -> None:
    url = deployment.settings.database_url
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(PAUSE_BEFORE_ROWS if first == "cancel" else PAUSE_AFTER_COMPLETION)
    deployment.start_worker("worker")
    with psycopg.connect(url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(7)")
        job_id = deployment.submit(JobSpec(dataset="imdb-test", limit=100))  # one batch: the last
        deployment.wait_for(lambda: blocked_backends(url, "advisory") == 1, "the batch to reach the gate")

        outcome: list[str] = []

        def cancel() -> None:
            with deployment.sessions() as session:
                try:
                    outcome.append(cancel_job(session, job_id).status)
                except ConflictError as exc:
                    outcome.append(exc.code)

        canceller = threading.Thread(target=cancel)
        canceller.start()
        if first == "cancel":
            canceller.join(timeout=30)  # the batch holds no lock on the job yet: the cancel goes through
        else:  # the batch holds the job's row: the cancel waits for it
            deployment.wait_for(lambda: blocked_backends(url, "transactionid") == 1, "the cancel to wait")
        gate.execute("SELECT pg_advisory_unlock(7)")
        canceller.join(timeout=30)

    rows = deployment.wait_for(lambda: deployment.rows(job_id)[0], "the batch to store its rows")
    job = deployment.job(job_id)
    if first == "cancel":
        assert (outcome, job.status) == (["cancelled"], "cancelled")
    else:
        assert (outcome, job.status) == (["job_finished"], "succeeded")
    assert rows == job.done + job.failed == 100  # the batch stored its rows either way, counted once


def test_two_jobs_over_the_same_reviews_at_once_stay_independent(deployment: Deployment) -> None:
    deployment.start_worker("worker")
    jobs = [deployment.submit(JobSpec(dataset="imdb-test", limit=2_000)) for _ in range(2)]
    for job_id in jobs:
        deployment.wait_for_job(job_id, deadline=60)
        deployment.assert_complete(job_id, 2_000)
    with deployment.sessions() as session:
        reviews = [
            set(session.scalars(select(Explanation.review_id).where(Explanation.job_id == job_id)))
            for job_id in jobs
        ]
    assert reviews[0] == reviews[1] and len(reviews[0]) == 2_000


def test_a_plain_worker_serves_both_queues_and_each_message_lands_in_one(deployment: Deployment) -> None:
    deployment.start_worker("plain")  # `celery -A worker worker`, no -Q
    result = deployment.celery.send_task(
        EXPLAIN_TEXT, args=["a great film", "predicted"], queue=INTERACTIVE_QUEUE
    )
    assert result.get(timeout=30)["tokens"] == ["<start>", "a", "great", "film"]

    deployment.celery.control.cancel_consumer(BULK_QUEUE, reply=True)
    deployment.celery.control.cancel_consumer(INTERACTIVE_QUEUE, reply=True)
    job_id = deployment.submit(JobSpec(dataset="imdb-test", limit=300))
    with deployment.celery.connection_for_write() as connection:
        client = connection.default_channel.client
        assert (client.llen(BULK_QUEUE), client.llen(INTERACTIVE_QUEUE)) == (3, 0)
    deployment.celery.control.add_consumer(BULK_QUEUE, reply=True)
    deployment.wait_for_job(job_id, deadline=60)
    deployment.assert_complete(job_id, 300)
